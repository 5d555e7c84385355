"""Reading the event log as one consumer group over every shard's stream: the Redis side of the
consumer loop (consumer_loop.py), which `nextwatch archive` runs.

Each shard has its own stream in its own hash slot (keys.py), and every command here names one
stream. The commands for all shards go out as one pipeline: on a single Redis that is one round
trip, on a Redis Cluster redis-py's ClusterPipeline sends each node its shards' commands together,
one round trip per node. Every call returns plain Python data (stream ids as text, events as the
dicts ``decode_event`` makes), so the loop never sees a redis type. A Redis that cannot be reached
raises StoreUnavailable, also when only some commands of a pipeline failed; a shard whose group
or stream vanished (FLUSHALL, XGROUP DESTROY) is reported as missing, so the caller can create the
group again; the other shards' answers are still handed back.
"""

from __future__ import annotations

import dataclasses

import redis

from ..keys import Keys
from ..settings import Settings
from .connection import connect, is_cluster, translate_failures
from .group_lag import GroupLag, read_group_lag
from .stream_entries import decode_event

CLAIM_BATCH = 1_000


class GroupMissing(Exception):
    """The consumer group (or the stream under it) no longer exists in these shards."""

    def __init__(self, shards):
        self.shards = sorted(shards)
        super().__init__(f"no consumer group in shard(s) {', '.join(map(str, self.shards))}")


@dataclasses.dataclass(frozen=True)
class Delivered:
    """One entry handed to this consumer. ``event`` is None when the entry can no longer be
    read: it was trimmed from the stream while still pending, or its fields are malformed."""

    stream_id: str
    event: dict | None


@dataclasses.dataclass
class Sweep:
    """One read of several shards. ``entries``: per shard, oldest first. ``pending``: for reads
    of new entries, this consumer's pending count per shard taken right after the read (the
    loop checks it against what it was handed). ``missing``: shards whose group or stream is
    gone."""

    entries: dict[int, list[Delivered]]
    pending: dict[int, int]
    missing: set[int]


def _text(raw) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _no_group(problem: Exception) -> bool:
    # NOGROUP: the group or stream went. UNBLOCKED: a blocked read at that moment (Redis 7);
    # this module never blocks, but a reply to another client's command is never guessed at.
    return isinstance(problem, redis.ResponseError) and str(problem).startswith(("NOGROUP", "UNBLOCKED"))


class EventConsumer:
    """One named consumer of one consumer group, on every shard's event-log stream."""

    def __init__(self, client, keys: Keys, group: str, consumer: str):
        self.client = client
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.shards = list(range(keys.shards))

    @classmethod
    def from_settings(cls, settings: Settings, group: str, consumer: str) -> "EventConsumer":
        """Its own connection, so that a consumer never waits behind other work."""
        return cls(connect(settings), Keys(settings.key_prefix, settings.shards), group, consumer)

    def close(self) -> None:
        self.client.close()

    @translate_failures
    def ensure_groups(self) -> list[int]:
        """Create the group at id 0 in every shard that lacks it (so every entry still in the
        stream is delivered), and the stream if missing. Returns the shards where it was created."""
        results = self._pipelined(
            (shard, lambda pipe, key: pipe.xgroup_create(key, self.group, id="0", mkstream=True))
            for shard in self.shards)
        created = []
        for shard, result in results.items():
            if isinstance(result, redis.ResponseError) and str(result).startswith("BUSYGROUP"):
                continue
            _raise_failure(result)
            created.append(shard)
        return created

    @translate_failures
    def claim_orphans(self) -> tuple[int, int]:
        """Take over the entries pending at other consumers of the group (a consumer that ran
        under another name), so that this consumer's pending list is the group's. Returns how
        many entries are pending in the group (this consumer's own included), and how many
        pending entries Redis dropped because they were trimmed from the stream."""
        pending, gone = 0, 0
        starts = {shard: "0-0" for shard in self.shards}
        while starts:
            results = self._pipelined(
                (shard, lambda pipe, key, start=start: pipe.xautoclaim(
                    key, self.group, self.consumer, min_idle_time=0, start_id=start, count=CLAIM_BATCH))
                for shard, start in starts.items())  # one round per CLAIM_BATCH entries of the fullest shard
            missing = {shard for shard, result in results.items() if _no_group(result)}
            if missing:
                raise GroupMissing(missing)
            for shard, reply in results.items():
                _raise_failure(reply)
                pending += len(reply[1])
                gone += len(reply[2]) if len(reply) > 2 else 0
                starts[shard] = _text(reply[0])
            starts = {shard: start for shard, start in starts.items() if start != "0-0"}
        return pending, gone

    @translate_failures
    def read_pending(self, cursors: dict[int, str], count: int) -> Sweep:
        """Per shard, entries delivered to this consumer and not acknowledged, with ids above
        the shard's cursor ("0" for all), oldest first."""
        results = self._pipelined(
            (shard, lambda pipe, key, start=start: self._queue_read(pipe, key, start, count))
            for shard, start in cursors.items())
        sweep = Sweep({}, {}, set())
        for shard, reply in results.items():
            if _no_group(reply):
                sweep.missing.add(shard)
                continue
            _raise_failure(reply)
            sweep.entries[shard] = _delivered(shard, reply)
        return sweep

    @translate_failures
    def read_new(self, shards: list[int], count: int) -> Sweep:
        """Per shard, entries never delivered to the group, oldest first (none waits: a
        blocking read cannot span the nodes of a cluster), each followed by this consumer's
        pending count in that shard (XPENDING), read in the same pipeline right after."""
        pipe = self.client.pipeline(transaction=False)
        for shard in shards:
            key = self.keys.event_log(shard)
            self._queue_read(pipe, key, ">", count)
            pipe.xpending(key, self.group)
        replies = pipe.execute(raise_on_error=False)
        sweep = Sweep({}, {}, set())
        for index, shard in enumerate(shards):
            reply, summary = replies[2 * index], replies[2 * index + 1]
            if _no_group(reply) or _no_group(summary):
                sweep.missing.add(shard)
                continue
            _raise_failure(reply)
            _raise_failure(summary)
            sweep.entries[shard] = _delivered(shard, reply)
            sweep.pending[shard] = next((int(c["pending"]) for c in summary["consumers"]
                                         if _text(c["name"]) == self.consumer), 0)
        return sweep

    @translate_failures
    def ack(self, stream_ids: dict[int, list[str]]) -> int:
        """Acknowledge entries: one XACK per shard, so each shard's part of a batch is
        acknowledged all at once or not at all. Raises GroupMissing naming the shards whose
        group is gone, after the other shards' acknowledgements went through."""
        results = self._pipelined(
            (shard, lambda pipe, key, ids=ids: pipe.xack(key, self.group, *ids))
            for shard, ids in stream_ids.items() if ids)
        missing = {shard for shard, result in results.items() if _no_group(result)}
        if missing:
            raise GroupMissing(missing)
        acked = 0
        for result in results.values():
            _raise_failure(result)
            acked += int(result)
        return acked

    @translate_failures
    def newest_ids(self) -> dict[int, str]:
        """The id of the newest entry of each shard's stream (shards with an empty or no stream
        are left out)."""
        results = self._pipelined((shard, lambda pipe, key: pipe.xrevrange(key, count=1)) for shard in self.shards)
        newest = {}
        for shard, reply in results.items():
            _raise_failure(reply)
            if reply:
                newest[shard] = _text(reply[0][0])
        return newest

    def lag(self) -> GroupLag:
        return read_group_lag(self.client, self.keys, self.group)

    # -- pipelines -------------------------------------------------------------------------------
    def _pipelined(self, commands) -> dict[int, object]:
        """Run ``(shard, queue(pipe, stream key))`` pairs as one pipeline; each shard's reply, or
        the exception its command ended with (raised here only for a failure of the whole call)."""
        pipe = self.client.pipeline(transaction=False)
        shards = []
        for shard, queue in commands:
            queue(pipe, self.keys.event_log(shard))
            shards.append(shard)
        if not shards:
            return {}
        return dict(zip(shards, pipe.execute(raise_on_error=False)))

    def _queue_read(self, pipe, key: str, start: str, count: int) -> None:
        # XREADGROUP names its key after STREAMS, so a cluster client asks a node (COMMAND
        # GETKEYS) where to send each one, one round trip per command; naming the node of the
        # key's slot spares that. A moved slot answers MOVED and redis-py sends it on.
        route = {"target_nodes": self.client.get_node_from_key(key)} if is_cluster(self.client) else {}
        pipe.execute_command("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count, "STREAMS", key,
                             start, **route)


def _raise_failure(result) -> None:
    """A command's own exception, raised (translate_failures turns a Redis failure into the
    project's error); anything else passes."""
    if isinstance(result, Exception):
        raise result


def _delivered(shard: int, reply) -> list[Delivered]:
    delivered = []
    for _stream, entries in reply or []:
        for raw_id, fields in entries:
            stream_id = _text(raw_id)
            delivered.append(Delivered(stream_id, decode_event(shard, stream_id, fields)))
    return delivered
