"""The archiver: every shard's event-log stream in (as one consumer group), day-partitioned
Parquet files out, each event exactly once, acknowledged only once its file is durable.

It is a handler of the consumer loop (store/consumer_loop.py), which reads the pending entries
first, then new ones, every shard in each sweep, and hands each entry over once, per shard in
stream-id order. The archiver gathers events of all shards into one batch and writes it when it
holds ``batch_size`` events or ``flush_seconds`` after its first event: one file per UTC day
(files.py), all carrying the batch's record. Only after the whole batch is durable are its ids
released, and the loop acknowledges them, one XACK per shard.

Dedupe. The newest batch's record says, for every shard, the newest stream id archived
(``through``). Within a shard, entries are archived in stream-id order with no gap: the loop
hands them over in id order, from the pending ones (all older than any new one) to the new
ones, and checks that no delivered entry escaped it (a lost reply); every entry handed over
is either in a batch, or unreadable and acknowledged. So an entry at or below its shard's
``through`` is archived: it is acknowledged and skipped, whether it comes back because the crash
came before its XACK, because Redis lost the XACK, or because its group was created again.
Everything above is new.

Crash points (SIGKILL, OOM, power loss), and what the next start does:
  1. batch in memory only / some temp files written: the batch has no final file; its temp files
     are deleted at start, its entries are pending and are read again (maybe into other batches).
  2. every temp file fsynced, some renamed: the batch is the newest; its other files are renamed
     from their temp files at start (they were complete before the first rename). Nothing is
     read from Redis for it; nothing is written twice.
  3. renamed, folders not yet fsynced: a process crash keeps the renames (they are in the
     kernel); a power loss may undo some or all of them, which is case 1 or 2.
  4. every file durable, no XACK sent (or Redis lost it: AOF everysec): the entries are pending,
     at or below ``through`` of their shard: acknowledged and skipped, nothing written.
  5. XACK sent: one command per shard, all shards in one pipeline; a crash in between leaves
     some shards acknowledged and others pending, which is case 4 for those.
  6. during the recovery of case 2: the temp files not yet renamed are still there; the next
     start does the rest.
  SIGTERM/SIGINT: the current batch is written and acknowledged, then the process exits 0. If
  Redis is down at that moment the files are still written; the unacknowledged entries are
  skipped as archived on the next start.

Redis down: the loop retries with backoff and logs it. The batch in memory is still written
when due (files need no Redis; its entries stay pending in the group) and acknowledged once
Redis answers again. ``--once`` gives up instead: it writes what it holds and exits 1.

What is lost: each shard's stream is capped (XADD MAXLEN ~ event_log_max_length / shards).
Entries trimmed before the group read them never reach the archive; ``GroupLag.trimmed_unread``
counts them and they are logged. Entries trimmed while pending (an archiver stopped for a long
time) are archived if their file was written before the stop; otherwise they are lost, logged,
and counted in ``ArchiveStats.unreadable``.

Assumptions: one archiver per group and per archive folder (the folder is locked; another
consumer of the same group would take entries out of order); stream ids only grow within a
shard. Redis guarantees this unless it loses data: after a failover that lost the newest writes
of a shard, or a restart from an older file, new ids still lie above the lost (maybe archived)
ones as long as the new master's clock is not behind the old one's by more than the outage
lasted; ids at or below ``through`` would be skipped as archived.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

from ..store.consumer_loop import ConsumerLoop
from ..store.event_consumer import Delivered, EventConsumer
from .files import ArchiveFolder, BatchRecord, by_day

log = logging.getLogger("nextwatch.archive")


@dataclasses.dataclass
class ArchiveStats:
    events_written: int = 0
    files_written: int = 0
    duplicates_skipped: int = 0  # delivered again but already in the archive
    unreadable: int = 0  # trimmed while pending, or malformed: acknowledged, not archived
    ok: bool = True  # False: --once stopped because Redis could not be reached


def _no_checkpoint(point: str) -> None:
    pass


class Archiver:
    def __init__(self, consumer: EventConsumer, folder: ArchiveFolder, batch_size: int = 10_000,
                 flush_seconds: float = 5.0, checkpoint: Callable[[str], None] = _no_checkpoint,
                 clock: Callable[[], float] = time.monotonic):
        if batch_size < 1 or flush_seconds <= 0:
            raise ValueError("batch_size must be at least 1 and flush_seconds above 0")
        self.folder = folder
        self.shards = len(consumer.shards)
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.checkpoint = checkpoint
        self.clock = clock
        self.stats = ArchiveStats()
        self.loop = ConsumerLoop(consumer, self, log, checkpoint, clock)
        self._newest: BatchRecord | None = None  # the newest batch on disk
        self._batch: list[dict] = []
        self._started: float | None = None
        self._released: dict[int, list[str]] = {}

    def stop(self) -> None:
        """Ask the loop to write what it holds and return (safe from a signal handler)."""
        self.loop.stop()

    def run(self, once: bool = False) -> ArchiveStats:
        """Archive until :meth:`stop`, or with ``once`` until the entries that were in the
        event log when it started are archived. Raises ArchiveUnusable for a folder it must
        not add to."""
        recovery = self.folder.recover(self.shards)
        self._newest = recovery.newest
        log.info("archive %s: newest batch %s, %d temp files renamed to finish it, %d leftover temp files removed",
                 self.folder.root, recovery.newest.number if recovery.newest else None, recovery.finished,
                 recovery.removed)
        self.stats.ok = self.loop.run(once=once)
        self.stats.unreadable += self.loop.lost_pending
        return self.stats

    # -- the consumer loop's handler -------------------------------------------------------------
    @property
    def held(self) -> int:
        return len(self._batch)

    def take(self, shard: int, items: list[Delivered]) -> None:
        for item in items:
            if self._newest is not None and self._newest.archived(shard, item.stream_id):
                self._release(shard, item.stream_id)
                self.stats.duplicates_skipped += 1
            elif item.event is None:
                self._release(shard, item.stream_id)
                self.stats.unreadable += 1
                log.warning("entry %s of shard %d is gone from the stream or malformed; not archived",
                            item.stream_id, shard)
            else:
                if not self._batch:
                    self._started = self.clock()
                self._batch.append(item.event)
                if len(self._batch) >= self.batch_size:
                    self._write()

    def tick(self) -> None:
        if self._batch and self.clock() - self._started >= self.flush_seconds:
            self._write()

    def flush(self) -> None:
        self._write()

    def released(self) -> dict[int, list[str]]:
        released, self._released = self._released, {}
        return released

    # -- writing ---------------------------------------------------------------------------------
    def _write(self) -> None:
        if not self._batch:
            return
        events = self._batch
        days = by_day(events)
        record = BatchRecord.following(self._newest, self.shards, days)
        files = self.folder.write_batch(record, days, self.checkpoint)
        self.checkpoint("batch-written")
        self._newest, self._batch, self._started = record, [], None
        for event in events:
            self._release(event["shard"], event["stream_id"])
        self.stats.files_written += files
        self.stats.events_written += len(events)
        log.info("archived %d events of %d shards in %d files (batch %d)", len(events), len(record.ranges), files,
                 record.number)

    def _release(self, shard: int, stream_id: str) -> None:
        self._released.setdefault(shard, []).append(stream_id)
