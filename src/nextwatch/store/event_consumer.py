"""Reading the event log as a consumer group: the Redis side of `nextwatch archive` and
`nextwatch refine`.

Every call returns plain Python data (stream ids as text, events as dicts shaped like
``EventLog.read_all``'s), so the archiver above never sees a redis type. A Redis that cannot be
reached raises StoreUnavailable; a group or stream that vanished (FLUSHALL, XGROUP DESTROY)
raises GroupMissing, so the caller can create it again.
"""

from __future__ import annotations

import dataclasses
import math

import redis

from ..keys import Keys
from ..settings import Settings
from .connection import connect, translate_failures

CLAIM_BATCH = 1_000


class GroupMissing(Exception):
    """The consumer group (or the stream under it) no longer exists."""


@dataclasses.dataclass(frozen=True)
class Delivered:
    """One entry handed to this consumer. ``event`` is None when the entry can no longer be
    read: it was trimmed from the stream while still pending, or its fields are malformed."""

    stream_id: str
    event: dict | None


@dataclasses.dataclass(frozen=True)
class GroupLag:
    """How far a consumer group is behind the event log (``XINFO GROUPS`` / ``XINFO STREAM``).

    ``pending``: delivered to a consumer, not yet acknowledged (for the archiver: read, not yet
    durably written). ``lag``: in the log, not yet delivered; None when Redis cannot tell
    (e.g. after XDEL inside the unread range). ``trimmed_unread``: entries the stream's MAXLEN
    cap removed before the group read them, i.e. lost to the group; None when unknown."""

    group: str
    exists: bool
    pending: int
    lag: int | None
    last_delivered_id: str
    stream_length: int
    trimmed_unread: int | None


def _text(raw) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def stream_id_order(stream_id: str) -> tuple[int, int]:
    """A sort key for stream ids ("<ms>-<seq>"): compared as numbers, not as text."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def decode_event(stream_id: str, fields: dict | None) -> dict | None:
    """The watch.lua fields as a dict, or None when the entry is gone or unusable."""
    if not fields:
        return None
    try:
        timestamp = float(fields[b"ts"])
        event = {
            "user_id": fields[b"user_id"].decode(),
            "content_id": fields[b"content_id"].decode(),
            "timestamp": timestamp,
            "event_id": fields.get(b"event_id", b"").decode() or None,
            "stream_id": stream_id,
        }
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    return event if math.isfinite(timestamp) and timestamp >= 0 else None


def _no_group(problem: redis.ResponseError) -> bool:
    # NOGROUP: the next read after the group or stream went. UNBLOCKED: a read blocked at that
    # moment (Redis 7 ends it with "UNBLOCKED the stream key no longer exists").
    return str(problem).startswith(("NOGROUP", "UNBLOCKED"))


class EventConsumer:
    """One named consumer of one consumer group on the event log."""

    def __init__(self, client: redis.Redis, keys: Keys, group: str, consumer: str):
        self.client = client
        self.keys = keys
        self.group = group
        self.consumer = consumer

    @classmethod
    def from_settings(cls, settings: Settings, group: str, consumer: str, block_seconds: float) -> "EventConsumer":
        """Its own connection: a blocking read holds the socket for up to ``block_seconds``,
        which must stay below the socket timeout or every idle read would look like a failure."""
        timeout = max(settings.redis_timeout_seconds, block_seconds + 2.0)
        return cls(connect(settings.with_overrides(redis_timeout_seconds=timeout)), Keys(settings.key_prefix),
                   group, consumer)

    def close(self) -> None:
        self.client.close()

    @translate_failures
    def ensure_group(self) -> bool:
        """Create the group at id 0 (so every entry still in the stream is delivered), and the
        stream if missing. True if it was created, False if it existed."""
        try:
            self.client.xgroup_create(self.keys.event_log, self.group, id="0", mkstream=True)
        except redis.ResponseError as problem:
            if str(problem).startswith("BUSYGROUP"):
                return False
            raise
        return True

    @translate_failures
    def claim_orphans(self) -> tuple[int, int]:
        """Take over the entries pending at other consumers of the group (an archiver that ran
        under another name), so that this consumer's pending list is the group's, in id order.
        Returns how many entries are pending in the group (this consumer's own included), and
        how many pending entries Redis dropped because they were trimmed from the stream."""
        pending, gone, start = 0, 0, "0-0"
        while True:
            try:
                reply = self.client.xautoclaim(self.keys.event_log, self.group, self.consumer, min_idle_time=0,
                                               start_id=start, count=CLAIM_BATCH)
            except redis.ResponseError as problem:
                if _no_group(problem):
                    raise GroupMissing(str(problem)) from None
                raise
            pending += len(reply[1])
            gone += len(reply[2]) if len(reply) > 2 else 0
            start = _text(reply[0])
            if start == "0-0":
                return pending, gone

    @translate_failures
    def read_pending(self, after: str, count: int) -> list[Delivered]:
        """Entries delivered to this consumer and not acknowledged, with ids above ``after``
        ("0" for all), oldest first."""
        return self._read(after, count, block_ms=None)

    @translate_failures
    def read_new(self, count: int, block_ms: int | None) -> list[Delivered]:
        """Entries never delivered to the group, oldest first; waits up to ``block_ms`` (None:
        does not wait) when there are none."""
        if block_ms is not None and block_ms < 1:
            block_ms = 1  # BLOCK 0 would wait forever
        return self._read(">", count, block_ms=block_ms)

    def _read(self, start: str, count: int, block_ms: int | None) -> list[Delivered]:
        try:
            reply = self.client.xreadgroup(self.group, self.consumer, {self.keys.event_log: start}, count=count,
                                           block=block_ms)
        except redis.ResponseError as problem:
            if _no_group(problem):
                raise GroupMissing(str(problem)) from None
            raise
        delivered = []
        for _stream, entries in reply or []:
            for raw_id, fields in entries:
                stream_id = _text(raw_id)
                delivered.append(Delivered(stream_id, decode_event(stream_id, fields)))
        return delivered

    @translate_failures
    def ack(self, stream_ids: list[str]) -> int:
        """Acknowledge entries (one XACK, so a batch is acknowledged all at once or not at all)."""
        if not stream_ids:
            return 0
        return int(self.client.xack(self.keys.event_log, self.group, *stream_ids))

    @translate_failures
    def newest_id(self) -> str | None:
        """The id of the newest entry in the event log, None when it is empty."""
        newest = self.client.xrevrange(self.keys.event_log, count=1)
        return _text(newest[0][0]) if newest else None

    def lag(self) -> GroupLag:
        return read_group_lag(self.client, self.keys, self.group)


@translate_failures
def read_group_lag(client: redis.Redis, keys: Keys, group: str) -> GroupLag:
    """The lag of ``group`` on the event log: two round trips, cheap enough for a scrape."""
    try:
        stream = client.xinfo_stream(keys.event_log)
        groups = client.xinfo_groups(keys.event_log)
    except redis.ResponseError as problem:
        if "no such key" in str(problem):
            return GroupLag(group, False, 0, 0, "0-0", 0, 0)
        raise
    length = int(stream["length"])
    info = next((g for g in groups if _text(g["name"]) == group), None)
    if info is None:
        return GroupLag(group, False, 0, None, "0-0", length, None)
    last = _text(info["last-delivered-id"])
    lag = None if info.get("lag") is None else int(info["lag"])
    trimmed = None
    if lag is not None:
        # Redis counts undelivered entries as entries-added minus entries-read, trimmed ones
        # included. When the oldest entry left is newer than the group's position, every
        # entry still in the stream is undelivered, so the rest of the lag was trimmed away.
        first = stream.get("first-entry")
        if first is None or stream_id_order(_text(first[0])) > stream_id_order(last):
            trimmed = max(0, lag - length)
        else:
            trimmed = 0
    return GroupLag(group, True, int(info["pending"]), lag, last, length, trimmed)
