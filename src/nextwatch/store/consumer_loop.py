"""The one loop of the event-log consumers (`nextwatch archive` runs it): every shard's stream
read as one consumer group, each entry handed to a handler once, acknowledged when the handler
releases it.

Order of reading. On start, and after any failure, the loop joins the group: it creates the
group in every shard that lacks it (at id 0, with the stream if missing), claims the entries
pending at other consumer names, reads this consumer's pending entries again, shard by shard
from id 0, and only then the entries never delivered (">"). So within a shard the handler sees
entries in stream-id order; across shards there is no order (ids of two shards do not compare).
Every read is a sweep, one command per shard in one pipeline. No blocking read can span the
nodes of a cluster, so once a sweep has drained every shard the loop sleeps: 0.05 s, doubling
to 1 s while sweeps find nothing (also how soon a stop request is noticed).

Each entry reaches the handler once: the loop keeps the ids it handed over and has not yet
acknowledged, and does not hand over again one it still holds (the pending entries read again
after a failure). The handler releases ids when it is done with them (the archiver: once their
file is durable); the loop acknowledges them, one XACK per shard, all shards in one pipeline.

Replies lost with their connection. A read of new entries makes them pending at this consumer
whether or not its reply arrives, and redis-py sends a command again when its connection drops,
so a lost reply can pass unnoticed: its entries would sit pending, unseen, behind entries of
the same shard that the handler already took. So every read of new entries is followed, in the
same pipeline, by this consumer's pending count in that shard (XPENDING), which must equal what
the loop holds in the shard plus what the read delivered. When it is larger, the shard's reply
is not handed over and the loop starts again from the pending entries, which hold both. When it
is smaller, the group was reset behind the loop's back: handled as a missing group.

Failures. StoreUnavailable: the handler keeps what it holds and ``tick`` still runs (files need
no Redis); the loop retries with backoff (0.5 s doubling to 30 s), then joins again from the
pending entries. With ``once`` it gives up instead and ``run`` returns False. A group missing
in some shards (FLUSHALL, XGROUP DESTROY): the handler writes out what it holds (after a
FLUSHALL that is the only copy), the loop forgets those shards' ids (the new group delivers
them again), creates the groups again and starts over.

``once``: the newest id of every shard is noted at the first join; the loop stops once every
shard was read up to it (or drained), even while events keep coming.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Protocol

from ..errors import StoreUnavailable
from .event_consumer import Delivered, EventConsumer, GroupMissing
from .stream_entries import stream_id_order

SWEEP_ENTRIES = 10_000  # entries one sweep may bring, shared out over the shards it reads
READ_COUNT, MIN_READ_COUNT = 1_000, 16  # entries per shard and read, at most and at least
IDLE_FIRST, IDLE_MAX = 0.05, 1.0
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
LAG_CHECK_SECONDS = 60.0
TICK_SECONDS = 0.05


class Handler(Protocol):
    """What a consumer plugs into the loop."""

    held: int  # entries taken and not yet released (for the log)

    def take(self, shard: int, items: list[Delivered]) -> None:
        """Entries of one shard, oldest first, each for the first time."""

    def tick(self) -> None:
        """Called often, also while Redis is away: do what is due (needs no Redis)."""

    def flush(self) -> None:
        """Finish with everything taken (stopping, or a group gone)."""

    def released(self) -> dict[int, list[str]]:
        """Ids, per shard, that may be acknowledged now; each returned once."""


def _no_checkpoint(point: str) -> None:
    pass


class ConsumerLoop:
    def __init__(self, consumer: EventConsumer, handler: Handler, log: logging.Logger,
                 checkpoint: Callable[[str], None] = _no_checkpoint, clock: Callable[[], float] = time.monotonic):
        self.consumer = consumer
        self.handler = handler
        self.log = log
        self.checkpoint = checkpoint
        self.clock = clock
        self.lost_pending = 0  # pending entries Redis dropped, trimmed before they were handled
        self._unacked: dict[int, set[str]] = {shard: set() for shard in consumer.shards}
        self._acks: dict[int, list[str]] = {}
        self._stopping = False
        self._next_lag_check = 0.0
        self._trimmed_reported: int | None = 0

    def stop(self) -> None:
        """Ask the loop to flush the handler and return (safe from a signal handler)."""
        self._stopping = True

    def run(self, once: bool = False) -> bool:
        """Consume until :meth:`stop`, or with ``once`` until the entries there at the start
        are handled. False when ``once`` gave up because Redis could not be reached."""
        ok, ready, failures, idle = True, False, 0, IDLE_FIRST
        cursors: dict[int, str] = {}  # the pending entries still to read, per shard
        targets: dict[int, str] | None = None  # with ``once``: each shard's newest id at the start
        undrained: set[int] = set()
        while not self._stopping:
            try:
                if not ready:
                    self._join()
                    cursors = {shard: "0" for shard in self.consumer.shards}
                    if once and targets is None:
                        targets = self.consumer.newest_ids()
                        undrained = set(targets)
                    ready = True
                self._settle()
                if cursors:
                    self._read_pending(cursors)
                elif once and not undrained:
                    break
                else:
                    shards = sorted(undrained) if once else self.consumer.shards
                    found, drained, lost_reply = self._read_new(shards, targets if once else None)
                    undrained -= drained
                    if lost_reply:
                        self.log.warning("entries were delivered to consumer %s without reaching it (a reply lost "
                                         "with its connection); reading the pending entries again",
                                         self.consumer.consumer)
                        ready = False
                    elif not once and drained == set(shards):
                        idle = IDLE_FIRST if found else min(IDLE_MAX, idle * 2)
                        self._sleep(idle)
                self._settle()
                self._check_lag()
                failures = 0
            except StoreUnavailable as failure:
                failures += 1
                if once:
                    self.log.error("Redis is unreachable (%s); stopping", failure)
                    ok = False
                    break
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1))
                self.log.warning("Redis is unreachable (%s); %d events held, retrying in %.1f s", failure,
                                 self.handler.held, delay)
                # A read whose reply was lost with the connection may have delivered entries
                # this loop never saw: start again from the pending entries.
                ready = False
                self._sleep(delay)
            except GroupMissing as missing:
                self.log.warning("consumer group %s vanished (%s); creating it again", self.consumer.group, missing)
                self.handler.flush()
                self._collect()
                for shard in missing.shards:
                    self._acks.pop(shard, None)  # moot: the new group delivers these entries again
                    self._unacked[shard].clear()
                ready = False
        self._finish()
        return ok

    # -- one step each ---------------------------------------------------------------------------
    def _join(self) -> None:
        created = self.consumer.ensure_groups()
        if created:
            self.log.info("created consumer group %s at id 0 in %d of %d shards", self.consumer.group, len(created),
                          len(self.consumer.shards))
        pending, gone = self.consumer.claim_orphans()
        if gone:
            self.lost_pending += gone
            self.log.warning("%d pending entries were trimmed from the stream before they were handled; lost", gone)
        if pending:
            self.log.info("%d entries pending in group %s, all now owned by consumer %s; read again first", pending,
                          self.consumer.group, self.consumer.consumer)
        self._check_lag(force=True)

    def _read_pending(self, cursors: dict[int, str]) -> None:
        count = _read_count(len(cursors))
        sweep = self.consumer.read_pending(cursors, count)
        for shard, items in sweep.entries.items():
            self._hand_over(shard, items)
            if len(items) < count:
                del cursors[shard]
            else:
                cursors[shard] = items[-1].stream_id
        if sweep.missing:
            raise GroupMissing(sweep.missing)

    def _read_new(self, shards: list[int], targets: dict[int, str] | None) -> tuple[bool, set[int], bool]:
        """One sweep of new entries: (found any, shards read to their end, a reply was lost)."""
        count = _read_count(len(shards))
        sweep = self.consumer.read_new(shards, count)
        found, drained, lost_reply, reset = False, set(), False, set()
        for shard, items in sweep.entries.items():
            held = self._unacked[shard]
            expected = len(held) + sum(1 for item in items if item.stream_id not in held)
            if sweep.pending[shard] > expected:
                lost_reply = True
                continue
            if sweep.pending[shard] < expected:
                reset.add(shard)
                continue
            found = found or bool(items)
            self._hand_over(shard, items)
            target = targets.get(shard) if targets is not None else None
            if len(items) < count or (target is not None and
                                      stream_id_order(items[-1].stream_id) >= stream_id_order(target)):
                drained.add(shard)
        if sweep.missing or reset:
            raise GroupMissing(sweep.missing | reset)
        return found, drained, lost_reply

    def _hand_over(self, shard: int, items: list[Delivered]) -> None:
        held = self._unacked[shard]
        fresh = [item for item in items if item.stream_id not in held]
        if fresh:
            held.update(item.stream_id for item in fresh)
            self.handler.take(shard, fresh)

    def _settle(self) -> None:
        self.handler.tick()
        self._collect()
        if self._acks:
            self.consumer.ack(self._acks)
            self.checkpoint("acked")
            for shard, ids in self._acks.items():
                self._unacked[shard].difference_update(ids)
            self._acks = {}

    def _collect(self) -> None:
        for shard, ids in self.handler.released().items():
            self._acks.setdefault(shard, []).extend(ids)

    def _finish(self) -> None:
        self.handler.flush()
        try:
            self._settle()
        except (StoreUnavailable, GroupMissing) as failure:
            waiting = sum(len(ids) for ids in self._acks.values())
            self.log.warning("%d handled entries not acknowledged (%s); they are delivered again on the next start",
                             waiting, failure)

    # -- timing ----------------------------------------------------------------------------------
    def _sleep(self, seconds: float) -> None:
        deadline = self.clock() + seconds
        while not self._stopping and self.clock() < deadline:
            self.handler.tick()  # files need no Redis: what is due is not held through an outage
            self._collect()
            time.sleep(min(TICK_SECONDS, max(0.0, deadline - self.clock())))

    def _check_lag(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now < self._next_lag_check:
            return
        self._next_lag_check = now + LAG_CHECK_SECONDS
        lag = self.consumer.lag()
        if lag.trimmed_unread and lag.trimmed_unread != self._trimmed_reported:
            self._trimmed_reported = lag.trimmed_unread
            self.log.warning("%d events were trimmed from the streams before group %s read them; they never reach "
                             "it (raise NEXTWATCH_EVENT_LOG_MAX_LENGTH or keep the consumer running)",
                             lag.trimmed_unread, lag.group)
        self.log.info("group %s: %d pending, lag %s, stream length %d over %d shards", lag.group, lag.pending,
                      lag.lag, lag.stream_length, len(lag.by_shard))


def _read_count(shards: int) -> int:
    return max(MIN_READ_COUNT, min(READ_COUNT, SWEEP_ENTRIES // max(1, shards)))
