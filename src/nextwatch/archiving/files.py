"""The archive on disk: Parquet files in one folder per UTC day, named after stream ids.

Layout (``archive_dir``)::

    day=2026-11-24/events-1795558684445-0-1795558689012-3.parquet
    day=2026-11-25/events-1795558684445-0-1795558689012-3.parquet
    .archiver.lock

A file is named after the batch it belongs to: the first and last stream id of the batch. A
batch whose events fall on one day is one file holding exactly that id range; a batch that
spans days is one file per day, all with the batch's name, each holding that day's events of
the range. The names are the archive's only bookkeeping: the highest ``last`` id on disk says
how far the archive goes (see archiver.py for why that is exact).

Every file is either absent or complete: written to a hidden temp file in its day folder,
flushed and fsynced, renamed to its final name, then the folder is fsynced. Spark, and so
``nextwatch train --events <archive_dir>``, skips names starting with '.' or '_', so temp
files and the lock are never read, and it reads ``day=`` as a partition column it does not
need.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import os
import re
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("content_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),
        pa.field("event_id", pa.string()),
        pa.field("stream_id", pa.string(), nullable=False),
    ]
)
DAY_PREFIX = "day="
FILE_NAME = re.compile(r"events-(\d+-\d+)-(\d+-\d+)\.parquet")
TEMP_PREFIX = ".events-"
TEMP_SUFFIX = ".tmp"
LOCK_NAME = ".archiver.lock"
_EPOCH = datetime.date(1970, 1, 1)


class ArchiveBusy(RuntimeError):
    """Another archiver holds the archive folder."""


def id_key(stream_id: str) -> tuple[int, int]:
    """A stream id ('<ms>-<seq>') as something that sorts like Redis sorts it."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def day_of(timestamp: float) -> str:
    """The UTC day of a unix timestamp, as YYYY-MM-DD."""
    return (_EPOCH + datetime.timedelta(days=int(timestamp // 86_400))).isoformat()


@dataclasses.dataclass(frozen=True)
class BatchRange:
    first: str
    last: str

    @property
    def file_name(self) -> str:
        return f"events-{self.first}-{self.last}.parquet"

    def holds(self, stream_id: str) -> bool:
        return id_key(self.first) <= id_key(stream_id) <= id_key(self.last)


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
        archivers on one folder would break the one-writer order the dedupe relies on."""
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

    def remove_temp_files(self) -> int:
        """Delete temp files a crash left behind; their events are still pending in Redis."""
        removed = 0
        for folder in self.day_folders():
            for path in folder.iterdir():
                if path.name.startswith(TEMP_PREFIX) and path.name.endswith(TEMP_SUFFIX):
                    path.unlink()
                    removed += 1
        return removed

    def latest_batch(self) -> BatchRange | None:
        """The batch with the highest last stream id on disk (one listing of every day folder)."""
        latest: BatchRange | None = None
        for folder in self.day_folders():
            with os.scandir(folder) as entries:
                for entry in entries:
                    match = FILE_NAME.fullmatch(entry.name)
                    if match and (latest is None or id_key(match[2]) > id_key(latest.last)):
                        latest = BatchRange(match[1], match[2])
        return latest

    def files(self) -> list[Path]:
        return [p for folder in self.day_folders() for p in sorted(folder.iterdir()) if FILE_NAME.fullmatch(p.name)]

    def write_batch(self, events: list[dict], batch: BatchRange,
                    checkpoint: Callable[[str], None]) -> tuple[int, int]:
        """Write ``events`` (stream order) as one file per UTC day, each named after ``batch``.
        A day's file that already exists is the same batch written before a crash and is kept
        as it is. Returns how many files and events were written. ``checkpoint`` is called at
        each step (tests kill the process there)."""
        by_day: dict[str, list[dict]] = {}
        for event in events:
            by_day.setdefault(day_of(event["timestamp"]), []).append(event)
        files = events_written = 0
        for day in sorted(by_day):
            folder = self.root / f"{DAY_PREFIX}{day}"
            final = folder / batch.file_name
            if final.exists():
                _fsync_folder(folder)  # the rename may not have reached the disk before the crash
                continue
            self._make_folder(folder)
            temp = folder / f".{batch.file_name}{TEMP_SUFFIX}"
            table = pa.Table.from_pylist(by_day[day], schema=SCHEMA)
            with open(temp, "wb") as handle:
                pq.write_table(table, handle)
                handle.flush()
                os.fsync(handle.fileno())
            checkpoint("temp-written")
            os.rename(temp, final)
            checkpoint("renamed")
            _fsync_folder(folder)
            checkpoint("folder-synced")
            files += 1
            events_written += table.num_rows
        return files, events_written

    def _make_folder(self, folder: Path) -> None:
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            _fsync_folder(self.root)  # the new folder's entry in the archive root is durable too
