"""A user's state as it is kept in Redis, and the typed values the store hands the service.

Layout (docs/redis-keys.md): a user's state is one string of little-endian uint32: n, the last
n watched title codes (oldest first), the impressions (a count, then rows of code, times shown,
last shown, demoted until), then the cached prediction if any: a stamp, the CRC-32 of the model
version and the history it was computed from, then the predicted codes. The stamp makes a
prediction invalid the moment the history or the model changes, even when two watches of one
user race each other. One key a user rather than two (history, prediction) saves the second
key's name, object, table entries and, in a cluster, its slot bookkeeping: about 150 bytes a
user (BENCHMARKS.md). Binary codes keep a 50-title history in ~200 bytes, a third of the same
history as a list of strings. The Lua scripts read and write the same layout (user_state.lua).
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

CODE = np.dtype("<u4")
_COUNT = struct.Struct("<I")  # one CODE, read straight from a state's bytes
# Impressions kept per user: 14 of 16 bytes keep a user's state within 228 bytes of what it is
# without any (BENCHMARKS.md, Memory); the least recently shown go first (impressions.lua).
MAX_IMPRESSIONS = 14


def encode_codes(codes) -> bytes:
    return np.asarray(codes, dtype=CODE).tobytes()


def decode_codes(raw: bytes | None) -> np.ndarray:
    return np.frombuffer(raw or b"", dtype=CODE)


def prediction_stamp(model_version: int, history: np.ndarray) -> int:
    """CRC-32 of the model version and the history a prediction was computed from."""
    return zlib.crc32(history.tobytes(), zlib.crc32(model_version.to_bytes(4, "little")))


IMPRESSION_FIELDS = 4  # uint32 each: code, times shown, last shown, demoted until (user_state.lua)
NO_IMPRESSIONS = np.zeros((0, IMPRESSION_FIELDS), dtype=CODE)


def encode_state(history, prediction: bytes = b"", impressions: np.ndarray = NO_IMPRESSIONS) -> bytes:
    """A user's state (user_state.lua has the layout): the history (at most the cap, already
    applied), the impressions (rows of code, shown, last shown, demoted until) and an encoded
    prediction."""
    history = np.asarray(history, dtype=CODE)
    impressions = np.asarray(impressions, dtype=CODE).reshape(-1, IMPRESSION_FIELDS)
    return (encode_codes([len(history)]) + history.tobytes() + encode_codes([len(impressions)])
            + impressions.tobytes() + prediction)


def decode_state(raw: bytes | None) -> tuple[np.ndarray, np.ndarray, "CachedPrediction | None"]:
    """(history, impressions as rows of 4, cached prediction or None) of a user's state."""
    values = decode_codes(raw)
    if len(values) < 2:
        return values[:0], NO_IMPRESSIONS, None
    # The two counts read from the bytes: a NumPy scalar and its int() cost several times more,
    # and every cache hit decodes a state.
    count = _COUNT.unpack_from(raw, 0)[0]
    shown = _COUNT.unpack_from(raw, 4 * (1 + count))[0]
    start = 2 + count
    end = start + IMPRESSION_FIELDS * shown
    impressions = values[start:end].reshape(shown, IMPRESSION_FIELDS) if shown else NO_IMPRESSIONS
    return values[1: 1 + count], impressions, CachedPrediction.from_codes(values[end:])


@dataclasses.dataclass(frozen=True)
class CachedPrediction:
    stamp: int
    codes: np.ndarray

    @classmethod
    def decode(cls, raw: bytes | None) -> "CachedPrediction | None":
        return cls.from_codes(decode_codes(raw))

    @classmethod
    def from_codes(cls, values: np.ndarray) -> "CachedPrediction | None":
        """A stamp and at least one code, else None (nothing cached)."""
        if len(values) < 2:
            return None
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
    impressions: np.ndarray = dataclasses.field(default_factory=lambda: NO_IMPRESSIONS)  # rows: code, shown, last, demoted until

    def demoted(self, now: float) -> np.ndarray:
        """Codes of titles demoted for this user at ``now`` (shown too often, not watched)."""
        return self.impressions[self.impressions[:, 3] > now, 0]


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
    shown_lately: bool = False  # the title was shown to the user within the impression window


@dataclasses.dataclass(frozen=True)
class RecordedImpressions:
    answer: dict  # {"user_id", "shown", "demoted": [content ids demoted by these impressions]}
    duplicate: bool  # the event id was seen before: nothing recorded again
