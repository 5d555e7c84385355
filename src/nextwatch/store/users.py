"""Per-user state: watch history, cached prediction, remembered event ids.

Layouts (docs/redis-keys.md): a history is a string of little-endian uint32 title codes, oldest
first; a cached prediction is a uint32 stamp, the CRC-32 of the model version and the history it was
computed from, then uint32 title codes. The stamp makes a prediction invalid the moment the
history or the model changes, even when two watches of one user race each other. One stamp
instead of a version and a CRC keeps a top-10 entry at 44 bytes, the largest value Redis stores
in one allocation with its object (an "embstr"): 16 bytes a user less. Binary
codes keep a 50-title history in ~200 bytes, a third of the same history as a list of strings.

Every method returns typed values (numpy code arrays, the dataclasses below), never Redis bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import zlib

import numpy as np
import redis

from ..errors import ReplicasBehind, StoreUnavailable
from ..keys import Keys
from ..settings import Settings
from .connection import is_cluster, translate_failures

CODE = np.dtype("<u4")
REDIRECTS_FOLLOWED = 4  # MOVED/ASK answers followed by a durable watch before it answers 503


def encode_codes(codes) -> bytes:
    return np.asarray(codes, dtype=CODE).tobytes()


def decode_codes(raw: bytes | None) -> np.ndarray:
    return np.frombuffer(raw or b"", dtype=CODE)


def prediction_stamp(model_version: int, history: np.ndarray) -> int:
    """CRC-32 of the model version and the history a prediction was computed from."""
    return zlib.crc32(history.tobytes(), zlib.crc32(model_version.to_bytes(4, "little")))


@dataclasses.dataclass(frozen=True)
class CachedPrediction:
    stamp: int
    codes: np.ndarray

    @classmethod
    def decode(cls, raw: bytes | None) -> "CachedPrediction | None":
        if not raw or len(raw) < 8:
            return None
        values = decode_codes(raw)
        return cls(int(values[0]), values[1:])

    @staticmethod
    def encode(model_version: int, history: np.ndarray, codes) -> bytes:
        return encode_codes([prediction_stamp(model_version, history), *codes])

    def is_valid_for(self, model_version: int, history: np.ndarray) -> bool:
        return self.stamp == prediction_stamp(model_version, history)


@dataclasses.dataclass(frozen=True)
class UserState:
    """What one read of a user's keys returns: enough to answer from cache or to recompute."""

    cached: CachedPrediction | None
    history: np.ndarray


@dataclasses.dataclass(frozen=True)
class PendingWatch:
    """An event id claimed by the request that recorded it, whose answer is not stored (yet):
    when, and what the answer is computed from (watch.lua writes the marker)."""

    recorded_at: float
    model_version: int
    history: np.ndarray

    @classmethod
    def decode(cls, raw: bytes) -> "PendingWatch | None":
        """None for anything else: a stored answer, or the bare ``pending`` of older versions."""
        parts = raw.split(b":", 3)
        if len(parts) != 4 or parts[0] != b"pending":
            return None
        return cls(float(parts[1]), int(parts[2]), decode_codes(parts[3]))


@dataclasses.dataclass(frozen=True)
class RepeatedEvent:
    """An event id seen before: the answer stored for it, or, while the request that recorded
    it has not stored one, what that answer is computed from (``pending``; None for a marker of
    an older version that cannot be read)."""

    answer: dict | None
    pending: PendingWatch | None


@dataclasses.dataclass(frozen=True)
class RecordedWatch:
    history: np.ndarray  # after the append
    previous: CachedPrediction | None  # what was cached before this watch
    stream_id: str


def _script(name: str) -> tuple[str, str]:
    """A Lua script's source and SHA-1, for EVALSHA in a pipeline."""
    source = importlib.resources.files(__package__).joinpath(name).read_text()
    return source, hashlib.sha1(source.encode()).hexdigest()


class UserStore:
    def __init__(self, client, keys: Keys, settings: Settings):
        self.client = client
        self.keys = keys
        self.settings = settings
        self._watch_source, self._watch_sha = _script("watch.lua")
        self._watch_script = client.register_script(self._watch_source)

    @translate_failures
    def read(self, user_id: str) -> UserState:
        """One round trip (both keys sit in the user's slot): cached prediction and history."""
        cached, history = self.client.mget(self.keys.prediction(user_id), self.keys.history(user_id))
        return UserState(CachedPrediction.decode(cached), decode_codes(history))

    @translate_failures
    def record_watch(self, user_id: str, content_id: str, code: int, timestamp: float, event_id: str | None,
                     model_version: int = 0) -> RecordedWatch | RepeatedEvent:
        """One round trip (a Lua script): append to history, invalidate the cached prediction,
        append to the shard's event log, and hand back what scoring needs (``model_version``:
        the version the caller predicts with, kept in an event id's pending marker). With
        ``write_replicas``, the same round trip then WAITs for that many replicas (same
        connection, so WAIT covers this script's writes) and raises ReplicasBehind if they did
        not confirm in time."""
        keys = [
            self.keys.history(user_id),
            self.keys.prediction(user_id),
            self.keys.user_event_log(user_id),
            self.keys.event_id(user_id, event_id or "-"),
        ]
        durable = self.settings.write_replicas > 0
        args = [
            encode_codes([code]),
            self.settings.history_length * CODE.itemsize,
            user_id,
            content_id,
            repr(timestamp),
            event_id or "",
            self.settings.event_id_ttl_seconds,
            max(1, self.settings.event_log_max_length // self.keys.shards),
            model_version,
            "1" if durable else "0",
        ]
        if durable:
            reply = self._record_and_wait(keys, args)
        else:
            reply = self._watch_script(keys=keys, args=args)
        if reply[0] == b"duplicate":
            return _repeated(reply[1])
        _, history, previous, stream_id = reply
        return RecordedWatch(decode_codes(history), CachedPrediction.decode(previous), stream_id.decode())

    def _record_and_wait(self, keys: list, args: list):
        """The watch script and WAIT on one connection of the node holding the user's slot,
        following MOVED and ASK redirects (a slot that moved, a replica promoted) as the cluster
        client does for its own commands."""
        replicas = self.settings.write_replicas
        timeout_ms = max(1, int(self.settings.write_replicas_timeout_seconds * 1000))
        target, asking = self._node_client(keys[0]), False
        for _attempt in range(REDIRECTS_FOLLOWED):
            pipe = target.pipeline(transaction=False)
            if asking:
                pipe.execute_command("ASKING")
            pipe.evalsha(self._watch_sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", replicas, timeout_ms)
            replies = pipe.execute(raise_on_error=False)
            reply, confirmed = replies[-2], replies[-1]
            if isinstance(reply, redis.exceptions.NoScriptError):
                target.script_load(self._watch_source)  # nothing ran: the WAIT waited for nothing
                continue
            if isinstance(reply, redis.exceptions.AskError):  # MovedError is one too
                moved = isinstance(reply, redis.exceptions.MovedError)
                if moved:
                    self.client.nodes_manager.move_slot(reply)  # the map learns the new owner
                target, asking = self._client_at(reply.host, reply.port), not moved
                continue
            if isinstance(reply, Exception):
                raise reply
            if isinstance(confirmed, Exception):
                raise confirmed
            if int(confirmed) < replicas:
                raise ReplicasBehind(f"the watch is recorded but only {int(confirmed)} of {replicas} replicas "
                                     f"confirmed it within {timeout_ms} ms; retry with the same event_id",
                                     retry_after_seconds=1)
            return reply
        raise StoreUnavailable("the slot of the user kept moving; retry")

    def _node_client(self, key: str):
        """A client for the one Redis that holds ``key``: itself on a single Redis."""
        if not is_cluster(self.client):
            return self.client
        return self.client.get_redis_connection(self.client.get_node_from_key(key))

    def _client_at(self, host: str, port: int):
        node = self.client.get_node(host=host, port=port)
        if node is None:  # a node the map does not know yet: learn the map again
            self.client.nodes_manager.initialize()
            node = self.client.get_node(host=host, port=port)
        if node is None:
            raise StoreUnavailable(f"Redis sent the user's slot to {host}:{port}, which the cluster does not list")
        return self.client.get_redis_connection(node)

    @translate_failures
    def save_prediction(self, user_id: str, model_version: int, history: np.ndarray, codes,
                        answer: tuple[str, dict] | None = None, after_watch: bool = False) -> None:
        """One round trip: cache the prediction (with its TTL) and, for an event id, the answer
        that a retry of the same event gets (both keys in the user's slot).

        ``after_watch``: the watch just recorded deleted the user's entry, so one that is there
        now was written since, for a newer watch: SET NX leaves it."""
        prediction = CachedPrediction.encode(model_version, history, codes)
        key, ttl = self.keys.prediction(user_id), self.settings.cache_ttl_seconds
        if answer is None:  # one command needs no pipeline object (measurably cheaper)
            self.client.set(key, prediction, ex=ttl, nx=after_watch)
            return
        event_id, body = answer
        pipe = self.client.pipeline(transaction=False)
        pipe.set(key, prediction, ex=ttl, nx=after_watch)
        pipe.set(self.keys.event_id(user_id, event_id), _answer_bytes(body), ex=self.settings.event_id_ttl_seconds)
        pipe.execute()

    @translate_failures
    def save_answer(self, user_id: str, event_id: str, body: dict) -> None:
        """The answer to an event id, for its later retries (see ``save_prediction``)."""
        self.client.set(self.keys.event_id(user_id, event_id), _answer_bytes(body),
                        ex=self.settings.event_id_ttl_seconds)


def _answer_bytes(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _repeated(stored: bytes) -> RepeatedEvent:
    if stored.startswith(b"pending"):
        return RepeatedEvent(None, PendingWatch.decode(stored))
    return RepeatedEvent(json.loads(stored), None)
