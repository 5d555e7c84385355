"""How far a consumer group is behind the event log: per shard (``XINFO STREAM`` and ``XINFO
GROUPS`` of its stream), and summed over the shards for a log line or a scrape."""

from __future__ import annotations

import dataclasses

import redis

from ..keys import Keys
from .connection import translate_failures
from .stream_entries import stream_id_order


@dataclasses.dataclass(frozen=True)
class ShardLag:
    """One shard's stream. ``pending``: delivered to a consumer, not yet acknowledged (for the
    archiver: read, not yet durably written). ``lag``: in the stream, not yet delivered; None
    when Redis cannot tell (e.g. after XDEL inside the unread range). ``trimmed_unread``:
    entries the stream's MAXLEN cap removed before the group read them, i.e. lost to the group;
    None when unknown."""

    shard: int
    exists: bool  # the group exists in this shard
    pending: int
    lag: int | None
    last_delivered_id: str
    stream_length: int
    trimmed_unread: int | None


@dataclasses.dataclass(frozen=True)
class GroupLag:
    """The sums over every shard; ``exists`` only when the group exists in all of them, and
    ``lag`` or ``trimmed_unread`` None when one shard cannot tell."""

    group: str
    exists: bool
    pending: int
    lag: int | None
    stream_length: int
    trimmed_unread: int | None
    by_shard: tuple[ShardLag, ...]

    @classmethod
    def summed(cls, group: str, shards: list[ShardLag]) -> "GroupLag":
        def total(values):
            values = list(values)
            return None if any(v is None for v in values) else sum(values)

        return cls(group, all(s.exists for s in shards), sum(s.pending for s in shards), total(s.lag for s in shards),
                   sum(s.stream_length for s in shards), total(s.trimmed_unread for s in shards), tuple(shards))


def _text(raw) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


@translate_failures
def read_group_lag(client, keys: Keys, group: str) -> GroupLag:
    """The lag of ``group`` on every shard's stream: one pipeline (one round trip per node),
    cheap enough for a scrape."""
    pipe = client.pipeline(transaction=False)
    for stream in keys.event_logs():
        pipe.xinfo_stream(stream)
        pipe.xinfo_groups(stream)
    replies = pipe.execute(raise_on_error=False)
    shards = []
    for shard in range(keys.shards):
        stream, groups = replies[2 * shard], replies[2 * shard + 1]
        if isinstance(stream, redis.ResponseError) and "no such key" in str(stream):
            shards.append(ShardLag(shard, False, 0, 0, "0-0", 0, 0))
            continue
        for reply in (stream, groups):
            if isinstance(reply, Exception):
                raise reply
        shards.append(_shard_lag(shard, group, stream, groups))
    return GroupLag.summed(group, shards)


def _shard_lag(shard: int, group: str, stream: dict, groups: list[dict]) -> ShardLag:
    length = int(stream["length"])
    info = next((g for g in groups if _text(g["name"]) == group), None)
    if info is None:
        return ShardLag(shard, False, 0, None, "0-0", length, None)
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
    return ShardLag(shard, True, int(info["pending"]), lag, last, length, trimmed)
