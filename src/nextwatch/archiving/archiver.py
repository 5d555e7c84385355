"""The archiver loop: event log (consumer group) in, day-partitioned Parquet files out, each
event exactly once, acknowledged only once its file is durable.

Order of work. Batches are formed in delivery order, which is stream-id order: first this
consumer's pending entries (read from id 0, oldest first; pending entries of other consumer
names are claimed first), then new ones (``>``), all above the group's last-delivered id.
A batch is written when it holds ``batch_size`` events or ``flush_seconds`` after its first
event: one file per UTC day (files.py), each temp file -> fsync -> rename -> fsync folder;
only when every file of the batch is renamed does the next batch start, and only then is the
batch XACKed, in one command. So the archive is always: complete batches, plus at most one
partial batch, the newest (highest stream ids), whose entries are all still pending.

Dedupe. At start the archiver lists the file names and takes the batch B with the highest last
id. A delivered entry below B.first is already archived: it is acknowledged and skipped. An
entry inside B's range belongs to B (pending because the crash came before XACK, or delivered
again because the group was recreated): such entries are collected into exactly B again, cut at
B.last whatever ``batch_size`` now is, so they split into the same days and names; day files
that exist are kept, missing ones written, then all are acknowledged. Entries above B.last are
new. No marker file is needed: the names are written by the same rename that makes the data
durable, so they can never disagree with it.

Crash points (SIGKILL, OOM, power loss), and what the next start does:
  1. batch in memory only / temp file written, not renamed: nothing of it is visible (temp
     files are hidden and deleted at start); its entries are pending and are read again.
  2. some day files of a multi-day batch renamed, not all: that batch is B; its pending
     entries rebuild B, the missing day files are written; nothing is written twice.
  3. renamed, folder not yet fsynced: a process crash keeps the rename (it is in the kernel);
     a power loss may undo it, which is case 1 or 2. The folder is fsynced again on replay.
  4. all files renamed, XACK not sent (or Redis lost it: AOF everysec): the entries are
     pending, fall in B's range, every file exists, nothing is written; they are acknowledged.
  5. XACK sent: one command, so all or none of the batch is acknowledged; after it nothing of
     the batch is pending.
  6. during the recovery of case 2 or 4: B is still the newest batch and its entries are still
     pending, so the next start does the same again.
  SIGTERM/SIGINT: the current batch is written and acknowledged, then the process exits 0. A
  partial replay of B is left pending instead (it is completed on the next start). If Redis is
  down at that moment the files are still written; the unacknowledged entries are skipped as
  duplicates on the next start.

Redis down: every call is retried with backoff (0.5 s doubling to 30 s) and logged. The batch
in memory is still written when due (files need no Redis; its entries stay pending in the
group) and acknowledged once Redis answers again; then the pending entries are read again
first, since a read cut off with the connection can have delivered entries without their
reply reaching the archiver. ``--once`` gives up instead: it writes what it holds and exits 1.

What is lost: the stream is capped (XADD MAXLEN ~ event_log_max_length). Entries trimmed
before the group read them never reach the archive; ``GroupLag.trimmed_unread`` counts them
and they are logged. Entries trimmed while pending (an archiver stopped for a long time) are
archived if their file was written before the stop; otherwise they are lost, logged, and
counted in ``ArchiveStats.unreadable``.

Assumptions: one archiver per group and per archive folder (the folder is locked; another
consumer of the same group would take entries out of order); stream ids only grow (Redis
guarantees this unless its data is lost and its clock goes back).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

from ..errors import StoreUnavailable
from ..store.event_consumer import Delivered, EventConsumer, GroupMissing
from .files import ArchiveFolder, BatchRange, id_key

log = logging.getLogger("nextwatch.archive")

READ_COUNT = 1_000  # entries per XREADGROUP
BLOCK_SECONDS = 1.0  # longest blocking read: how soon a stop request is noticed
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
LAG_CHECK_SECONDS = 60.0


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
        self.consumer = consumer
        self.folder = folder
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.checkpoint = checkpoint
        self.clock = clock
        self.stats = ArchiveStats()
        self._stopping = False
        self._latest: BatchRange | None = None  # the newest batch on disk
        self._batch: list[dict] = []
        self._replaying = False  # the batch in memory is the newest batch, delivered again
        self._started: float | None = None
        self._to_ack: list[str] = []
        self._next_lag_check = 0.0
        self._trimmed_reported: int | None = 0

    def stop(self) -> None:
        """Ask the loop to write what it holds and return (safe from a signal handler)."""
        self._stopping = True

    def run(self, once: bool = False) -> ArchiveStats:
        """Archive until :meth:`stop`, or with ``once`` until the entries that were in the
        event log when it started are archived."""
        removed = self.folder.remove_temp_files()
        self._latest = self.folder.latest_batch()
        log.info("archive %s: newest batch %s, %d leftover temp files removed", self.folder.root,
                 self._latest, removed)
        ready, pending_phase, cursor, failures = False, True, "0", 0
        drained_at: str | None = None  # with ``once``: the newest entry when the run began
        while not self._stopping:
            try:
                if not ready:
                    self._prepare()
                    ready, pending_phase, cursor = True, True, "0"
                    drained_at = self.consumer.newest_id() if once else None
                self._write_if_due()
                self._ack()
                if pending_phase:
                    items = self.consumer.read_pending(cursor, READ_COUNT)
                    if items:
                        cursor = items[-1].stream_id
                        self._take(items)
                    else:
                        pending_phase = False
                        if self._replaying:
                            self._flush()  # every pending entry of the newest batch is in
                else:
                    items = self.consumer.read_new(self._read_count(), None if once else self._block_ms())
                    self._take(items)
                    # Events keep coming: --once stops after those there when it started.
                    if once and (not items or drained_at is None
                                 or id_key(items[-1].stream_id) >= id_key(drained_at)):
                        break
                self._write_if_due()
                self._ack()
                self._check_lag()
                failures = 0
            except StoreUnavailable as failure:
                failures += 1
                if once:
                    log.error("Redis is unreachable (%s); stopping", failure)
                    self.stats.ok = False
                    break
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1))
                log.warning("Redis is unreachable (%s); %d events held, retrying in %.1f s", failure,
                            len(self._batch), delay)
                # A read whose reply was lost with the connection may have delivered entries
                # this loop never saw: they sit pending in the group, and reading only new
                # entries would leave them there until a restart. So start over from the
                # pending entries once Redis answers. A replay in memory is dropped: its
                # entries are still pending and are collected again, once each.
                if self._replaying:
                    self._batch, self._replaying, self._started = [], False, None
                ready = False
                self._sleep(delay)
            except GroupMissing as problem:
                # The stream or group was deleted. What is in memory goes to disk (the names
                # make any redelivery a duplicate to skip); its acks are moot.
                log.warning("consumer group vanished (%s); creating it again", problem)
                if self._replaying:  # the new group delivers all of it again: rebuild it then
                    self._batch, self._replaying = [], False
                self._write()
                self._to_ack.clear()
                ready = False
        self._finish(complete_replay=not pending_phase)
        return self.stats

    # -- one step each ---------------------------------------------------------------------------
    def _prepare(self) -> None:
        if self.consumer.ensure_group():
            log.info("created consumer group %s at id 0", self.consumer.group)
        pending, gone = self.consumer.claim_orphans()
        if gone:
            self.stats.unreadable += gone
            log.warning("%d pending entries were trimmed from the stream before they were archived; lost", gone)
        if pending:
            log.info("%d entries pending in group %s, all now owned by consumer %s; read again first", pending,
                     self.consumer.group, self.consumer.consumer)
        self._check_lag(force=True)

    def _take(self, items: list[Delivered]) -> None:
        for item in items:
            key = id_key(item.stream_id)
            if self._batch and not self._replaying and key <= id_key(self._batch[-1]["stream_id"]):
                self._flush()  # delivery went back (group reset): all that came before is archived
            if self._replaying and key > id_key(self._latest.last):
                self._flush()  # the newest batch is complete again
            latest = self._latest
            if latest is not None and key < id_key(latest.first):
                self._to_ack.append(item.stream_id)
                self.stats.duplicates_skipped += 1
                continue
            if item.event is None:
                self._to_ack.append(item.stream_id)
                self.stats.unreadable += 1
                log.warning("entry %s is gone from the stream or malformed; not archived", item.stream_id)
                continue
            if latest is not None and latest.holds(item.stream_id):
                self._replaying = True
                self._batch.append(item.event)
                if key == id_key(latest.last):
                    self._flush()
                continue
            if not self._batch:
                self._started = self.clock()
            self._batch.append(item.event)
            if len(self._batch) >= self.batch_size:
                self._flush()

    def _write(self) -> None:
        """The batch in memory to disk; its ids join those waiting for XACK."""
        if self._batch:
            events = self._batch
            batch = self._latest if self._replaying else BatchRange(events[0]["stream_id"], events[-1]["stream_id"])
            files, written = self.folder.write_batch(events, batch, self.checkpoint)
            self.checkpoint("batch-written")
            self._to_ack.extend(e["stream_id"] for e in events)
            self._latest = batch
            self.stats.files_written += files
            self.stats.events_written += written
            self.stats.duplicates_skipped += len(events) - written
            if self._replaying:
                log.info("batch %s-%s delivered again: %d events already archived, %d written to %d missing "
                         "files", batch.first, batch.last, len(events) - written, written, files)
            else:
                log.info("archived %d events %s-%s in %d files", written, batch.first, batch.last, files)
        self._batch, self._replaying, self._started = [], False, None

    def _write_if_due(self) -> None:
        if self._due():
            self._write()

    def _flush(self) -> None:
        self._write()
        self._ack()

    def _ack(self) -> None:
        if self._to_ack:
            self.consumer.ack(self._to_ack)
            self.checkpoint("acked")
            self._to_ack = []

    def _finish(self, complete_replay: bool) -> None:
        if self._replaying and not complete_replay:
            log.info("leaving the re-delivery of batch %s pending for the next start", self._latest)
            self._batch, self._replaying = [], False
        self._write()
        try:
            self._ack()
        except (StoreUnavailable, GroupMissing) as failure:
            log.warning("%d archived entries not acknowledged (%s); the next start skips them",
                        len(self._to_ack), failure)

    # -- timing ----------------------------------------------------------------------------------
    def _due(self) -> bool:
        if not self._batch or self._replaying:
            return False
        return self.clock() - self._started >= self.flush_seconds

    def _read_count(self) -> int:
        return max(1, min(READ_COUNT, self.batch_size - len(self._batch)))

    def _block_ms(self) -> int:
        wait = BLOCK_SECONDS
        if self._batch and not self._replaying:
            wait = min(wait, self._started + self.flush_seconds - self.clock())
        return max(1, int(wait * 1000))

    def _sleep(self, seconds: float) -> None:
        deadline = self.clock() + seconds
        while not self._stopping and self.clock() < deadline:
            self._write_if_due()  # files need no Redis: a due batch is not held through an outage
            time.sleep(min(0.1, max(0.0, deadline - self.clock())))

    def _check_lag(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now < self._next_lag_check:
            return
        self._next_lag_check = now + LAG_CHECK_SECONDS
        lag = self.consumer.lag()
        if lag.trimmed_unread and lag.trimmed_unread != self._trimmed_reported:
            self._trimmed_reported = lag.trimmed_unread
            log.warning("%d events were trimmed from the stream before the archiver read them; they are not "
                        "in the archive (raise NEXTWATCH_EVENT_LOG_MAX_LENGTH or keep the archiver running)",
                        lag.trimmed_unread)
        log.info("group %s: %d pending, lag %s, stream length %d", lag.group, lag.pending, lag.lag,
                 lag.stream_length)
