"""Readers that turn a data set file into watch events (title files: ``title_readers.py``).

Event formats (``EVENT_FORMATS``):

    movielens-100k  u.data: ``user<TAB>item<TAB>rating<TAB>timestamp``
    movielens-1m    ratings.dat: ``user::item::rating::timestamp``
    movielens-csv   ratings.csv (ml-latest, 20M, 25M): header ``userId,movieId,rating,timestamp``
    csv             header with ``user_id``, ``content_id``, ``timestamp`` and optionally
                    ``event_type``, ``progress``; any column order, quoted fields allowed
    jsonl           one JSON object a line with the same keys; ids may be numbers
    parquet         the same columns; a Parquet timestamp column becomes unix seconds
    sequences       one user a line: ``user item item ...`` in order; timestamp = position

A rating counts as a watch event; its value is not read. Timestamps are unix seconds and
must be finite numbers. A bad row is never dropped silently and never stops the read: it is
counted, and the first ``max_problems`` are kept with their line number (row number for
Parquet) and the rule they broke. Blank lines carry no row and are passed over.

Every reader returns ``Events`` (``events.py``): columns, with the ids stored once and
referred to by code, so a 25M-row file keeps no per-row Python objects.
"""

from __future__ import annotations

import contextvars
import csv
import dataclasses
import io
import json
import math
import os
from array import array
from typing import Callable

import numpy as np

from .events import Events
from .lines import NumberedLines, Problems

__all__ = ["EVENT_FORMATS", "Events", "ReadResult", "read_events"]

EVENT_FORMATS = ("movielens-100k", "movielens-1m", "movielens-csv", "csv", "jsonl", "parquet", "sequences")
MAX_PROBLEMS = 100  # bad rows kept with their line numbers; the rest are only counted


@dataclasses.dataclass(frozen=True)
class ReadResult:
    events: Events
    problems: list[tuple[int, str]]  # (line number, rule broken): the first MAX_PROBLEMS of them
    problem_count: int  # every bad row, kept or not

    def summary(self) -> str:
        text = f"{len(self.events)} events, {self.problem_count} bad rows"
        shown = "; ".join(f"line {line}: {reason}" for line, reason in self.problems[:5])
        return f"{text} ({shown}{'; ...' if self.problem_count > 5 else ''})" if shown else text


def read_events(path: str | os.PathLike, fmt: str, max_problems: int = MAX_PROBLEMS,
                progress: Callable[[int, int], None] | None = None) -> ReadResult:
    """Read the events of a file in format ``fmt`` (one of ``EVENT_FORMATS``).
    ``progress(bytes_read, total_bytes)`` is called as the file is read (not for Parquet)."""
    readers = {"movielens-100k": _read_movielens, "movielens-1m": _read_movielens,
               "movielens-csv": _read_movielens, "csv": _read_csv, "jsonl": _read_jsonl,
               "parquet": _read_parquet, "sequences": _read_sequences}
    if fmt not in readers:
        raise ValueError(f"event format must be one of {', '.join(EVENT_FORMATS)}, got {fmt!r}")
    problems = Problems(max_problems)
    token = _PROGRESS.set(progress)
    try:
        events = readers[fmt](os.fspath(path), fmt, problems)
    finally:
        _PROGRESS.reset(token)
    return ReadResult(events, problems.kept, problems.count)


# -- event formats ------------------------------------------------------------------------------
def _read_movielens(path: str, fmt: str, problems: Problems) -> Events:
    events = _EventColumns()
    separator = {"movielens-100k": "\t", "movielens-1m": "::", "movielens-csv": ","}[fmt]
    columns = (0, 1, 3)
    with _open(path, encoding="latin-1", newline="") as f:
        lines = enumerate(f, 1)
        if fmt == "movielens-csv":
            header = next(lines, (0, ""))[1].strip().split(",")
            try:
                columns = tuple(header.index(name) for name in ("userId", "movieId", "timestamp"))
            except ValueError:
                raise ValueError(f"{path}: ratings.csv needs the header columns userId, movieId, timestamp; "
                                 f"got {','.join(header)}") from None
        width = 4 if fmt != "movielens-csv" else len(header)
        for number, line in lines:
            fields = line.rstrip("\r\n").split(separator)
            if len(fields) != width:
                if line.strip():
                    problems.add(number, f"expected {width} {separator!r}-separated fields, got {len(fields)}")
                continue
            events.add(number, problems, fields[columns[0]], fields[columns[1]], fields[columns[2]])
    return events.build()


def _read_sequences(path: str, fmt: str, problems: Problems) -> Events:
    events = _EventColumns()
    with _open(path) as f:
        for number, raw in enumerate(f, 1):
            fields = _decoded(raw, number, problems)
            if fields is None:
                continue
            fields = fields.split()
            if len(fields) == 1:
                problems.add(number, "a sequence line needs a user id and at least one item")
            for position, item in enumerate(fields[1:]):
                events.add(number, problems, fields[0], item, position)
    return events.build()


def _read_csv(path: str, fmt: str, problems: Problems) -> Events:
    events = _EventColumns(extras=True)
    with _open(path, encoding="utf-8", errors="replace", newline="") as f:
        lines = NumberedLines(f)
        rows = csv.reader(lines)
        header = next(rows, [])
        missing = [name for name in ("user_id", "content_id", "timestamp") if name not in header]
        if missing:
            raise ValueError(f"{path}: CSV event files need the header columns user_id, content_id, timestamp; "
                             f"missing {', '.join(missing)}")
        index = [header.index(name) if name in header else None
                 for name in ("user_id", "content_id", "timestamp", "event_type", "progress")]
        for fields in rows:
            if len(fields) != len(header):
                if fields:
                    problems.add(lines.number, f"expected {len(header)} fields, got {len(fields)}")
                continue
            events.add(lines.number, problems, *(fields[i] if i is not None else "" for i in index))
    return events.build()


def _read_jsonl(path: str, fmt: str, problems: Problems) -> Events:
    events = _EventColumns(extras=True)
    with _open(path) as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except ValueError:
                problems.add(number, "not a JSON object (or not UTF-8)")
                continue
            if not isinstance(row, dict):
                problems.add(number, "each line must be a JSON object")
                continue
            stamp = row.get("timestamp")
            if not isinstance(stamp, (int, float)) or isinstance(stamp, bool):
                problems.add(number, "timestamp must be a number (unix seconds)")
                continue
            values = [_json_text(row.get(key)) for key in ("user_id", "content_id")]
            progress = row.get("progress")
            events.add(number, problems, values[0], values[1], stamp, _json_text(row.get("event_type")) or "",
                       "" if progress is None else progress)
    return events.build()


def _read_parquet(path: str, fmt: str, problems: Problems) -> Events:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    missing = [name for name in ("user_id", "content_id", "timestamp") if name not in table.column_names]
    if missing:
        raise ValueError(f"{path}: Parquet event files need columns user_id, content_id, timestamp; "
                         f"missing {', '.join(missing)}")
    ids = {name: pc.cast(table[name], pa.string()) for name in ("user_id", "content_id")}
    stamp = table["timestamp"]
    if pa.types.is_timestamp(stamp.type):
        per_second = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[stamp.type.unit]
        stamp = pc.divide(pc.cast(pc.cast(stamp, pa.int64()), pa.float64()), per_second)
    elif pa.types.is_string(stamp.type) or pa.types.is_large_string(stamp.type):
        stamp = pa.array([_number(x) for x in stamp.to_pylist()], pa.float64())
    timestamp = np.asarray(pc.fill_null(pc.cast(stamp, pa.float64()), np.nan), dtype=np.float64)
    good = np.isfinite(timestamp)
    for name, column in ids.items():
        good &= np.asarray(pc.fill_null(pc.utf8_length(column), 0)) > 0
    for row in np.flatnonzero(~good):
        problems.add(int(row) + 1, "user_id and content_id must be non-empty and timestamp a finite number")
    keep = pa.array(good)
    extras = {}
    for name in ("event_type", "progress"):
        if name in table.column_names:
            values = table[name].filter(keep)
            extras[name] = (np.asarray(pc.fill_null(pc.cast(values, pa.string()), ""), dtype=object)
                            if name == "event_type" else np.asarray(pc.fill_null(pc.cast(values, pa.float64()),
                                                                                 np.nan), dtype=np.float64))
    coded = [ids[name].filter(keep).combine_chunks().dictionary_encode() for name in ("user_id", "content_id")]
    return Events(*(np.asarray(c.dictionary.to_pylist(), dtype=object) for c in coded),
                  *(np.asarray(c.indices, dtype=np.int32) for c in coded),
                  timestamp[good], np.flatnonzero(good).astype(np.int64),
                  extras.get("event_type"), extras.get("progress"))


# -- helpers ------------------------------------------------------------------------------------
class _EventColumns:
    """Events appended one at a time into typed arrays, ids encoded by dictionaries."""

    def __init__(self, extras: bool = False):
        self.users: dict[str, int] = {}
        self.contents: dict[str, int] = {}
        self.user_codes, self.content_codes = array("i"), array("i")
        self.timestamp, self.sequence = array("d"), array("q")
        self.extras = extras
        self.event_types: dict[str, int] = {}
        self.event_type_codes, self.progress = array("i"), array("d")

    def add(self, line: int, problems: Problems, user, content, stamp, event_type="", progress="") -> None:
        if not user or not content:
            problems.add(line, "user id and content id must not be empty")
            return
        stamp = _number(stamp)
        if stamp is None:
            problems.add(line, "timestamp must be a finite number (unix seconds)")
            return
        if self.extras:
            progress = math.nan if progress == "" else _number(progress)
            if progress is None:
                problems.add(line, "progress, when given, must be a finite number")
                return
            self.event_type_codes.append(self.event_types.setdefault(event_type, len(self.event_types)))
            self.progress.append(progress)
        self.user_codes.append(self.users.setdefault(user, len(self.users)))
        self.content_codes.append(self.contents.setdefault(content, len(self.contents)))
        self.timestamp.append(stamp)
        self.sequence.append(len(self.sequence))

    def build(self) -> Events:
        event_type = progress = None
        if self.extras:
            event_type = np.asarray(list(self.event_types), dtype=object)[np.frombuffer(self.event_type_codes,
                                                                                       np.int32)]
            progress = np.frombuffer(self.progress, np.float64)
        return Events(np.asarray(list(self.users), dtype=object), np.asarray(list(self.contents), dtype=object),
                      np.frombuffer(self.user_codes, np.int32), np.frombuffer(self.content_codes, np.int32),
                      np.frombuffer(self.timestamp, np.float64), np.frombuffer(self.sequence, np.int64),
                      event_type, progress)


# The progress callback of the read under way (set by read_events), so the private readers
# need no extra parameter to report how far they are.
_PROGRESS: contextvars.ContextVar = contextvars.ContextVar("progress", default=None)


def _open(path: str, **text_options):
    """The file in binary mode, or as text with ``text_options``, reporting bytes read to the
    progress callback of the read under way (if any)."""
    raw = open(path, "rb", buffering=0)
    progress = _PROGRESS.get()
    if progress is not None:
        raw = _CountingReader(raw, os.fstat(raw.fileno()).st_size, progress)
    buffered = io.BufferedReader(raw, 1 << 20)
    return io.TextIOWrapper(buffered, **text_options) if text_options else buffered


class _CountingReader(io.RawIOBase):
    def __init__(self, raw, total: int, progress: Callable[[int, int], None]):
        self.raw, self.total, self.progress, self.done = raw, total, progress, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.raw.readinto(buffer)
        self.done += count or 0
        self.progress(self.done, self.total)
        return count

    def close(self) -> None:
        self.raw.close()
        super().close()


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _decoded(raw: bytes, number: int, problems: Problems) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        problems.add(number, "not valid UTF-8")
        return None


def _json_text(value) -> str:
    """An id as text: strings as they are, numbers as their text (as Spark reads them)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return ""
