"""Per-user state: watch history, cached prediction, remembered event ids.

Layouts (docs/redis-keys.md): a history is a string of little-endian uint32 title codes, oldest
first; a cached prediction is a uint32 stamp, the CRC-32 of the model version and the history it was
computed from, then uint32 title codes. The stamp makes a prediction invalid the moment the
history or the model changes, even when two watches of one user race each other. One stamp
instead of a version and a CRC keeps a top-10 entry at 44 bytes, the largest value Redis stores
in one allocation with its object (an "embstr"): 16 bytes a user less. Binary
codes keep a 50-title history in ~200 bytes, a third of the same history as a list of strings.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources
import zlib
from typing import Sequence

import numpy as np
import redis

from ..keys import Keys
from ..settings import Settings
from .connection import translate_failures

CODE = np.dtype("<u4")


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
    """What one GET of a user's keys returns: enough to answer from cache or to recompute."""

    cached: CachedPrediction | None
    history: np.ndarray
    model_version: int


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
class RecordedWatch:
    duplicate_answer: bytes | None  # the stored answer, or the pending marker, of an event id seen before
    history: np.ndarray
    previous: CachedPrediction | None
    model_version: int
    stream_id: str | None


@dataclasses.dataclass(frozen=True)
class RefinedPrediction:
    """A prediction computed off the request path (by the refiner), with the history it was
    computed from: it is cached only while that history is still the user's."""

    user_id: str
    history: np.ndarray
    codes: list[int]


def _version(raw) -> int:
    return int(raw) if raw else 0


@functools.cache
def _refine_script() -> tuple[str, str]:
    """refine.lua's source and SHA-1, for EVALSHA in a pipeline."""
    source = importlib.resources.files(__package__).joinpath("refine.lua").read_text()
    return source, hashlib.sha1(source.encode()).hexdigest()


class UserStore:
    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings):
        self.client = client
        self.keys = keys
        self.settings = settings
        source = importlib.resources.files(__package__).joinpath("watch.lua").read_text()
        self._watch_script = client.register_script(source)

    @translate_failures
    def read(self, user_id: str) -> UserState:
        """One round trip: the cached prediction, the history and the current model version."""
        cached, history, version = self.client.mget(
            self.keys.prediction(user_id), self.keys.history(user_id), self.keys.current_model
        )
        return UserState(CachedPrediction.decode(cached), decode_codes(history), _version(version))

    @translate_failures
    def record_watch(
        self, user_id: str, content_id: str, code: int, timestamp: float, event_id: str | None
    ) -> RecordedWatch:
        """One round trip (a Lua script): append to history, invalidate the cached prediction,
        append to the event log, and hand back what scoring needs."""
        keys = [
            self.keys.history(user_id),
            self.keys.prediction(user_id),
            self.keys.event_log,
            self.keys.current_model,
            self.keys.event_id(user_id, event_id or "-"),
        ]
        args = [
            encode_codes([code]),
            self.settings.history_length * CODE.itemsize,
            user_id,
            content_id,
            repr(timestamp),
            event_id or "",
            self.settings.event_id_ttl_seconds,
            self.settings.event_log_max_length,
        ]
        reply = self._watch_script(keys=keys, args=args)
        if reply[0] == b"duplicate":
            return RecordedWatch(reply[1], np.empty(0, CODE), None, _version(reply[2]), None)
        _, history, previous, version, stream_id = reply
        return RecordedWatch(
            None, decode_codes(history), CachedPrediction.decode(previous), _version(version), stream_id.decode()
        )

    @translate_failures
    def save_prediction(
        self,
        user_id: str,
        model_version: int,
        history: np.ndarray,
        codes,
        answer: tuple[str, bytes] | None = None,
        after_watch: bool = False,
    ) -> None:
        """One round trip: cache the prediction (with its TTL) and, for an event id, the answer
        that a retry of the same event gets.

        ``after_watch``: the watch just recorded deleted the user's entry, so one that is there
        now was written since, by the refiner (the blend for this same history, which must not
        be replaced by the table's answer) or for a newer watch: SET NX leaves it."""
        prediction = CachedPrediction.encode(model_version, history, codes)
        key, ttl = self.keys.prediction(user_id), self.settings.cache_ttl_seconds
        if answer is None:  # one command needs no pipeline object (measurably cheaper)
            self.client.set(key, prediction, ex=ttl, nx=after_watch)
            return
        event_id, body = answer
        pipe = self.client.pipeline(transaction=False)
        pipe.set(key, prediction, ex=ttl, nx=after_watch)
        pipe.set(self.keys.event_id(user_id, event_id), body, ex=self.settings.event_id_ttl_seconds)
        pipe.execute()

    @translate_failures
    def save_answer(self, user_id: str, event_id: str, body: bytes) -> None:
        """The answer to an event id, for its later retries (see ``save_prediction``)."""
        self.client.set(self.keys.event_id(user_id, event_id), body, ex=self.settings.event_id_ttl_seconds)

    @translate_failures
    def histories(self, user_ids: Sequence[str]) -> tuple[int, list[np.ndarray]]:
        """One round trip: the current model version and each user's history (empty if none)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.keys.current_model)
        for user_id in user_ids:
            pipe.get(self.keys.history(user_id))
        version, *histories = pipe.execute()
        return _version(version), [decode_codes(raw) for raw in histories]

    @translate_failures
    def save_refined(self, model_version: int, refined: Sequence[RefinedPrediction]) -> list[bool]:
        """One round trip (a pipeline of refine.lua calls): cache each prediction with
        ``save_prediction``'s TTL, but only where the user's history is still exactly the one it
        was computed from and ``model_version`` is still the current model. True where written;
        False where a newer watch or model came first (its entry is left as it is)."""
        if not refined:
            return []
        replies = self._run_refine_script(model_version, refined)
        if any(isinstance(reply, redis.exceptions.NoScriptError) for reply in replies):
            # A restarted or flushed Redis forgot the script. Running every call again is safe:
            # each one checks before it writes.
            self.client.script_load(_refine_script()[0])
            replies = self._run_refine_script(model_version, refined)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return [int(reply) == 1 for reply in replies]

    def _run_refine_script(self, model_version: int, refined: Sequence[RefinedPrediction]) -> list:
        sha = _refine_script()[1]
        pipe = self.client.pipeline(transaction=False)
        for prediction in refined:
            history = np.asarray(prediction.history, dtype=CODE)
            keys = [self.keys.history(prediction.user_id), self.keys.prediction(prediction.user_id),
                    self.keys.current_model]
            args = [history.tobytes(), model_version,
                    CachedPrediction.encode(model_version, history, prediction.codes), self.settings.cache_ttl_seconds]
            pipe.evalsha(sha, len(keys), *keys, *args)
        return pipe.execute(raise_on_error=False)
