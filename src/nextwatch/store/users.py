"""Per-user state: watch history, cached prediction, remembered event ids.

Layouts (docs/redis-keys.md): a history is a string of little-endian uint32 title codes, oldest
first; a cached prediction is a uint32 model version, the CRC-32 of the history it was computed from,
then uint32 title codes. The CRC makes a prediction invalid the moment the history changes, even
when two watches of one user race each other. Binary
codes keep a 50-title history in ~200 bytes, a third of the same history as a list of strings.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import zlib

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


def history_fingerprint(history: np.ndarray) -> int:
    return zlib.crc32(history.tobytes())


@dataclasses.dataclass(frozen=True)
class CachedPrediction:
    model_version: int
    history_fingerprint: int
    codes: np.ndarray

    @classmethod
    def decode(cls, raw: bytes | None) -> "CachedPrediction | None":
        if not raw or len(raw) < 12:
            return None
        values = decode_codes(raw)
        return cls(int(values[0]), int(values[1]), values[2:])

    @staticmethod
    def encode(model_version: int, history: np.ndarray, codes) -> bytes:
        return encode_codes([model_version, history_fingerprint(history), *codes])

    def is_valid_for(self, model_version: int, history: np.ndarray) -> bool:
        return self.model_version == model_version and self.history_fingerprint == history_fingerprint(history)


@dataclasses.dataclass(frozen=True)
class UserState:
    """What one GET of a user's keys returns: enough to answer from cache or to recompute."""

    cached: CachedPrediction | None
    history: np.ndarray
    model_version: int


@dataclasses.dataclass(frozen=True)
class RecordedWatch:
    duplicate_answer: bytes | None  # the stored answer when the event id was seen before
    history: np.ndarray
    previous: CachedPrediction | None
    model_version: int
    stream_id: str | None


def _version(raw) -> int:
    return int(raw) if raw else 0


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
    ) -> None:
        """One round trip: cache the prediction (with its TTL) and, for an event id, the answer
        that a retry of the same event gets."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(
            self.keys.prediction(user_id),
            CachedPrediction.encode(model_version, history, codes),
            ex=self.settings.cache_ttl_seconds,
        )
        if answer is not None:
            event_id, body = answer
            pipe.set(self.keys.event_id(user_id, event_id), body, ex=self.settings.event_id_ttl_seconds)
        pipe.execute()
