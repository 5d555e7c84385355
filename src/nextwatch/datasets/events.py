"""Watch events as columns: what every reader (``readers.py``) returns and what the evaluation
protocol and the importer take. The ids are stored once and referred to by code, so a 25M-row
file keeps no per-row Python objects.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Events:
    """Watch events as columns. ``user_codes[k]`` indexes ``user_ids`` (the distinct users, in
    first-seen order); likewise for content. ``sequence`` is the position in the file: it puts
    events with equal timestamps back in file order."""

    user_ids: np.ndarray  # object array of str
    content_ids: np.ndarray  # object array of str
    user_codes: np.ndarray  # int32
    content_codes: np.ndarray  # int32
    timestamp: np.ndarray  # float64
    sequence: np.ndarray  # int64
    event_type: np.ndarray | None = None  # object array of str ("" where absent), if the file has it
    progress: np.ndarray | None = None  # float64, NaN where absent, if the file has it

    def __len__(self) -> int:
        return len(self.timestamp)

    def user_id(self) -> np.ndarray:
        """The user id of every event."""
        return self.user_ids[self.user_codes]

    def content_id(self) -> np.ndarray:
        """The content id of every event."""
        return self.content_ids[self.content_codes]

    @classmethod
    def from_columns(cls, user_id, content_id, timestamp, sequence=None, event_type=None, progress=None) -> "Events":
        """Events from per-event columns (as tests and in-memory sources have them);
        ``sequence`` defaults to the given order."""
        users, user_codes = _encode(user_id)
        contents, content_codes = _encode(content_id)
        timestamp = np.asarray(timestamp, dtype=np.float64)
        sequence = np.arange(len(timestamp)) if sequence is None else sequence
        return cls(users, contents, user_codes, content_codes, timestamp, np.asarray(sequence, np.int64),
                   None if event_type is None else np.asarray(event_type, dtype=object),
                   None if progress is None else np.asarray(progress, dtype=np.float64))


def _encode(values) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values in first-seen order, and each value's code."""
    values = np.asarray(values).astype(str).astype(object)
    distinct, first, codes = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return distinct[order], rank[codes.ravel()].astype(np.int32)
