"""The archive on disk: Parquet files in one folder per UTC day, named after numbered batches.

Layout (``archive_dir``)::

    day=2026-11-24/events-000000000041.parquet
    day=2026-11-25/events-000000000041.parquet
    .archiver.lock

Batches are numbered 1, 2, 3 ... in the order they are written. A batch holds events of any
number of shards; its events of one UTC day go to one file in that day's folder, named after the
batch, rows sorted by shard and stream id. A flush writes one file per day it touches, however
many shards there are.

Every file of a batch carries the batch's record in its Parquet key-value metadata (key
``nextwatch.archive``), the same in each: the batch number, the shard count, the days it wrote,
each shard's first and last stream id in it, and ``through``: for every shard, the newest stream
id archived by this batch and the ones before it. The newest batch's record is thus the whole
bookkeeping of the archive; it becomes visible with the rename that makes the data visible, so
the two never disagree.

A batch is written in two steps: each day's rows to a hidden temp file, flushed and fsynced,
then the day folders fsynced (the temp files' names are durable too); only then each temp file
renamed to its final name, and the folders fsynced again. A final file of a batch on disk thus
means every temp file of the batch was complete and durable: a batch cut short during its renames
is finished at the next start by renaming the rest, without Redis. Temp files of a batch that
has no final file yet are deleted (its events are still pending in Redis).

Spark, and so ``nextwatch train --events <archive_dir>``, skips names starting with '.' or '_',
so temp files and the lock are never read, and it reads ``day=`` as a partition column it does
not need.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import functools
import json
import os
import re
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from ..store.stream_entries import stream_id_order

SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("content_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),
        pa.field("event_id", pa.string()),
        pa.field("stream_id", pa.string(), nullable=False),  # unique within a shard only
        pa.field("shard", pa.int32(), nullable=False),
        # "watch", or "impression" (a title shown, POST /impressions); training reads watches
        # only. Archives written before impressions existed lack the column: all watches.
        pa.field("kind", pa.string()),
    ]
)
RECORD_KEY = b"nextwatch.archive"
RECORD_FORMAT = 1
DAY_PREFIX = "day="
FILE_NAME = re.compile(r"events-(\d{12})\.parquet")
TEMP_NAME = re.compile(r"\.events-(\d{12})\.parquet\.tmp")
SINGLE_STREAM_NAME = re.compile(r"events-\d+-\d+-\d+-\d+\.parquet")  # before shards: one stream
LOCK_NAME = ".archiver.lock"
_EPOCH = datetime.date(1970, 1, 1)


class ArchiveBusy(RuntimeError):
    """Another archiver holds the archive folder."""


class ArchiveUnusable(RuntimeError):
    """The folder holds what this archiver must not add to (the message says why and what to do)."""


def day_of(timestamp: float) -> str:
    """The UTC day of a unix timestamp, as YYYY-MM-DD."""
    return (_EPOCH + datetime.timedelta(days=int(timestamp // 86_400))).isoformat()


def file_name(number: int) -> str:
    return f"events-{number:012d}.parquet"


def _event_order(event: dict) -> tuple[int, tuple[int, int]]:
    return event["shard"], stream_id_order(event["stream_id"])


def by_day(events: list[dict]) -> dict[str, list[dict]]:
    """The events of a batch by UTC day, in the order they are written: by shard, then stream id
    (one sort: a batch is up to 10,000 events, and this runs once per batch)."""
    days: dict[int, str] = {}
    grouped: dict[str, list[dict]] = {}
    for event in sorted(events, key=_event_order):
        number = int(event["timestamp"] // 86_400)
        day = days.get(number) or days.setdefault(number, day_of(event["timestamp"]))
        grouped.setdefault(day, []).append(event)
    return dict(sorted(grouped.items()))


@dataclasses.dataclass(frozen=True)
class BatchRecord:
    """What every file of one batch says about the archive."""

    number: int
    shards: int
    days: tuple[str, ...]
    ranges: dict[int, tuple[str, str]]  # this batch: shard -> its first and last stream id
    through: dict[int, str]  # this batch and all before: shard -> the newest stream id archived

    @classmethod
    def following(cls, previous: "BatchRecord | None", shards: int, days: dict[str, list[dict]]) -> "BatchRecord":
        """The record of a new batch written after ``previous``; ``days`` as :func:`by_day` gives."""
        ranges: dict[int, tuple[str, str]] = {}
        for events in days.values():
            for shard, first, last in _shard_ends(events):
                known = ranges.get(shard)
                if known is None:
                    ranges[shard] = (first, last)
                else:
                    ranges[shard] = (min(known[0], first, key=stream_id_order), max(known[1], last, key=stream_id_order))
        through = dict(previous.through) if previous else {}
        through.update({shard: last for shard, (_first, last) in ranges.items()})
        return cls((previous.number if previous else 0) + 1, shards, tuple(days), ranges, through)

    def archived(self, shard: int, stream_id: str) -> bool:
        """Whether the entry is in this batch or an earlier one (each shard is archived in
        stream-id order, with no gap: archiver.py)."""
        last = self._through_order.get(shard)
        return last is not None and stream_id_order(stream_id) <= last

    @functools.cached_property
    def _through_order(self) -> dict[int, tuple[int, int]]:
        return {shard: stream_id_order(last) for shard, last in self.through.items()}  # once, not per entry

    @property
    def file_name(self) -> str:
        return file_name(self.number)

    def to_bytes(self) -> bytes:
        return json.dumps({"format": RECORD_FORMAT, "batch": self.number, "shards": self.shards,
                           "days": list(self.days), "ranges": {str(s): list(r) for s, r in self.ranges.items()},
                           "through": {str(s): i for s, i in self.through.items()}}, sort_keys=True).encode()

    @classmethod
    def from_file(cls, path: Path) -> "BatchRecord":
        try:
            raw = json.loads((pq.read_schema(path).metadata or {})[RECORD_KEY])
            if raw["format"] != RECORD_FORMAT:
                raise ValueError(f"record format {raw['format']}")
            return cls(int(raw["batch"]), int(raw["shards"]), tuple(raw["days"]),
                       {int(s): (r[0], r[1]) for s, r in raw["ranges"].items()},
                       {int(s): i for s, i in raw["through"].items()})
        except (OSError, KeyError, ValueError, TypeError, pa.ArrowException) as problem:
            raise ArchiveUnusable(f"{path}: not a readable archive file of this nextwatch ({problem})") from None


def _shard_ends(events: list[dict]):
    """(shard, first stream id, last stream id) of each shard's run in events sorted by shard."""
    start = 0
    for index in range(1, len(events) + 1):
        if index == len(events) or events[index]["shard"] != events[start]["shard"]:
            yield events[start]["shard"], events[start]["stream_id"], events[index - 1]["stream_id"]
            start = index


@dataclasses.dataclass(frozen=True)
class Recovery:
    newest: BatchRecord | None  # the newest batch, complete on disk
    finished: int  # temp files of the newest batch renamed to finish it
    removed: int  # temp files of batches with no final file, deleted


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class ArchiveFolder:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._lock: int | None = None

    def lock(self) -> None:
        """Hold the folder for this process (released when it exits, even by SIGKILL): two
        archivers on one folder would number their batches over each other."""
        self.root.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise ArchiveBusy(f"another archiver is writing to {self.root}") from None
        self._lock = descriptor

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def day_folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.name.startswith(DAY_PREFIX) and p.is_dir())

    def files(self) -> list[Path]:
        return [p for folder in self.day_folders() for p in sorted(folder.iterdir()) if FILE_NAME.fullmatch(p.name)]

    def recover(self, shards: int) -> Recovery:
        """Bring the folder to complete batches only (one listing of every day folder) and
        return the newest batch's record. ArchiveUnusable when the folder was written by the
        single-stream archiver, with another shard count, or lost a file."""
        finals: dict[int, list[Path]] = {}
        temps: list[tuple[int, Path]] = []
        for folder in self.day_folders():
            for path in folder.iterdir():
                if match := FILE_NAME.fullmatch(path.name):
                    finals.setdefault(int(match[1]), []).append(path)
                elif match := TEMP_NAME.fullmatch(path.name):
                    temps.append((int(match[1]), path))
                elif SINGLE_STREAM_NAME.fullmatch(path.name):
                    raise ArchiveUnusable(
                        f"{self.root} holds files of the single-stream archiver (e.g. {path}); their stream ids "
                        "cannot be told from the per-shard ones. Move them to a folder of their own (train "
                        "reads both with --events) and start this archive in an empty one")
        newest = BatchRecord.from_file(finals[max(finals)][0]) if finals else None
        if newest is not None and newest.shards != shards:
            raise ArchiveUnusable(f"{self.root} was written with {newest.shards} shards and NEXTWATCH_SHARDS is "
                                  f"{shards}: archive into a new folder")
        finished = removed = 0
        for number, temp in temps:
            final = temp.parent / file_name(number)
            if newest is not None and number == newest.number and not final.exists():
                if BatchRecord.from_file(temp) != newest:
                    raise ArchiveUnusable(f"{temp} does not belong to batch {number} as its other files describe it")
                os.rename(temp, final)  # complete and durable before the batch's first rename
                _fsync_folder(temp.parent)
                finished += 1
            else:
                temp.unlink()
                removed += 1
        if newest is not None:
            lost = [day for day in newest.days if not (self.root / f"{DAY_PREFIX}{day}" / newest.file_name).exists()]
            if lost:
                raise ArchiveUnusable(f"batch {newest.number} in {self.root} lacks its files of {', '.join(lost)} and "
                                      "no temp file is left to finish it: files were removed by hand, or the disk "
                                      "lost them")
        return Recovery(newest, finished, removed)

    def write_batch(self, record: BatchRecord, days: dict[str, list[dict]], checkpoint: Callable[[str], None]) -> int:
        """Write one file per UTC day (``days`` as :func:`by_day` gives), each named after the
        batch and carrying its record; returns the number of files. ``checkpoint`` is called
        at each step (tests kill the process there)."""
        schema = SCHEMA.with_metadata({RECORD_KEY: record.to_bytes()})
        moves = []
        for day, events in days.items():
            folder = self.root / f"{DAY_PREFIX}{day}"
            self._make_folder(folder)
            temp = folder / f".{record.file_name}.tmp"
            with open(temp, "wb") as handle:
                pq.write_table(pa.Table.from_pylist(events, schema=schema), handle)
                handle.flush()
                os.fsync(handle.fileno())
            checkpoint("temp-written")
            moves.append((temp, folder / record.file_name))
        for temp, _final in moves:
            _fsync_folder(temp.parent)  # every temp name durable before the first rename
        checkpoint("temps-synced")
        for temp, final in moves:
            os.rename(temp, final)
            checkpoint("renamed")
        for _temp, final in moves:
            _fsync_folder(final.parent)
            checkpoint("folder-synced")
        return len(moves)

    def _make_folder(self, folder: Path) -> None:
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            _fsync_folder(self.root)  # the new folder's entry in the archive root is durable too
