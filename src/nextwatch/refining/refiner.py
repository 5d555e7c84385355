"""The refiner loop: event log (consumer group) in, the sequence model's blended top-k out, into
each watched user's prediction cache.

Why a separate process: the blend costs ~0.3-1 ms a user, too slow for POST /watched, which
caches the item table's answer at once. The refiner follows the event log and replaces that
answer with the blended one, so GET /recommend serves the better answer from cache.

A batch: up to ``batch_size`` entries; each user once, however often they watched in it (the
newest history covers all those watches); one round trip reads the histories and the current
model version; the model comes through the service's ``LoadedModel`` (reloaded only when the
version changes); one round trip writes every prediction, each only if the user's history and
the model version are still exactly those it was scored with (store/refine.lua), so a newer
watch's answer is never replaced by a refinement of an older history; then one XACK.

At least once: a crash before the XACK leaves the batch pending and the next start scores it
again, which writes the same predictions (or nothing, when they went stale meanwhile). Redis
away: logged, retried with backoff, then the pending entries are read again first (a read
whose reply was lost may have delivered entries). The group gone (FLUSHALL): created again.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

from ..errors import StoreOutOfMemory, StoreUnavailable
from ..model import NextTitleModel
from ..service import LoadedModel
from ..store import Store
from ..store.event_consumer import Delivered, EventConsumer, GroupMissing, stream_id_order
from ..store.users import RefinedPrediction

log = logging.getLogger("nextwatch.refine")

BLOCK_SECONDS = 1.0  # longest blocking read: how soon a stop request is noticed
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
SUMMARY_SECONDS = 60.0


@dataclasses.dataclass
class RefineStats:
    events: int = 0  # entries read (and acknowledged)
    refined: int = 0  # predictions written
    stale: int = 0  # not written: a newer watch or model came first
    skipped: int = 0  # users not scored: no model with a sequence part, no history, entry too old or unreadable
    ok: bool = True  # False: --once stopped because Redis could not be reached


class Refiner:
    def __init__(self, consumer: EventConsumer, store: Store, models: LoadedModel, top_k: int,
                 batch_size: int = 500, max_age_seconds: float = 86_400.0,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time):
        if batch_size < 1 or top_k < 1:
            raise ValueError("batch_size and top_k must be at least 1")
        self.consumer = consumer
        self.store = store
        self.models = models
        self.top_k = top_k
        self.batch_size = batch_size
        # A watch older than the cache TTL: the entry it cached has expired, and writing one now
        # would only bring back a cache entry for an idle user (a new group reads the whole log).
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self.wall_clock = wall_clock
        self.stats = RefineStats()
        self._stopping = False
        self._unrefinable_version: int | None = None  # last version reported as without a sequence part
        self._next_summary = clock() + SUMMARY_SECONDS

    def stop(self) -> None:
        """Ask the loop to finish the current batch and return (safe from a signal handler)."""
        self._stopping = True

    def run(self, once: bool = False) -> RefineStats:
        """Refine until :meth:`stop`, or with ``once`` until the entries that were in the event
        log when it started are done."""
        ready, pending_phase, cursor, failures = False, True, "0", 0
        drained_at: str | None = None  # with ``once``: the newest entry when the run began
        while not self._stopping:
            try:
                if not ready:
                    self._prepare()
                    ready, pending_phase, cursor = True, True, "0"
                    drained_at = self.consumer.newest_id() if once else None
                if pending_phase:
                    items = self.consumer.read_pending(cursor, self.batch_size)
                    if not items:
                        pending_phase = False
                        continue
                    cursor = items[-1].stream_id
                else:
                    items = self.consumer.read_new(self.batch_size, None if once else int(BLOCK_SECONDS * 1000))
                self._refine(items)
                failures = 0
                self._summarise()
                # Events keep coming: --once stops after those there when it started.
                if once and not pending_phase and (not items or drained_at is None
                                                   or stream_id_order(items[-1].stream_id) >= stream_id_order(drained_at)):
                    break
            except StoreUnavailable as failure:
                failures += 1
                if once:
                    log.error("Redis is unreachable (%s); stopping", failure)
                    self.stats.ok = False
                    break
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1))
                log.warning("Redis is unreachable (%s); retrying in %.1f s", failure, delay)
                ready = False  # then the pending entries first: a lost reply may have delivered some
                self._sleep(delay)
            except GroupMissing as problem:
                log.warning("consumer group vanished (%s); creating it again", problem)
                ready = False
        self._summarise(force=True)
        return self.stats

    # -- one step each ---------------------------------------------------------------------------
    def _prepare(self) -> None:
        if self.consumer.ensure_group():
            log.info("created consumer group %s at id 0", self.consumer.group)
        pending, gone = self.consumer.claim_orphans()
        if pending:
            log.info("%d entries pending in group %s (%d trimmed from the stream); refining them first", pending,
                     self.consumer.group, gone)

    def _refine(self, items: list[Delivered]) -> None:
        """Score each user of the batch once, write what is still current, then acknowledge."""
        users = self._users_to_refine(items)
        if users:
            version, histories = self.store.users.histories(users)
            model = self._model_for(version)
            if model is None:
                self.stats.skipped += len(users)
            else:
                self._write(version, self._score(model, users, histories))
        self.consumer.ack([item.stream_id for item in items])
        self.stats.events += len(items)

    def _users_to_refine(self, items: list[Delivered]) -> list[str]:
        """Each user once, in order of first appearance; entries gone, malformed or too old are
        left out (and only acknowledged)."""
        oldest = self.wall_clock() - self.max_age_seconds
        users: dict[str, None] = {}
        for item in items:
            if item.event is None or item.event["timestamp"] < oldest:
                self.stats.skipped += 1
            else:
                users.setdefault(item.event["user_id"], None)
        return list(users)

    def _model_for(self, version: int) -> NextTitleModel | None:
        """The current model when it has a sequence part to refine with, else None."""
        model = self.models.for_version(version)
        if model is None or model.version != version:  # none published, or pruned while we looked
            return None
        if not model.has_sequence:
            if self._unrefinable_version != version:
                log.info("model version %d has no sequence part: nothing to refine", version)
                self._unrefinable_version = version
            return None
        return model

    def _score(self, model: NextTitleModel, users: list[str], histories) -> list[RefinedPrediction]:
        scored = [(user_id, history) for user_id, history in zip(users, histories) if len(history)]
        self.stats.skipped += len(users) - len(scored)  # history gone (FLUSHALL): nothing to score
        top = model.recommend_many([history for _, history in scored], self.top_k)
        return [RefinedPrediction(user_id, history, codes) for (user_id, history), codes in zip(scored, top)]

    def _write(self, version: int, refined: list[RefinedPrediction]) -> None:
        try:
            written = self.store.users.save_refined(version, refined)
        except StoreOutOfMemory:
            # Every user keeps the table's answer. Retrying would only press on a full Redis.
            log.warning("Redis is out of memory: %d refined predictions not cached", len(refined))
            self.stats.skipped += len(refined)
            return
        self.stats.refined += sum(written)
        self.stats.stale += len(written) - sum(written)

    # -- timing ----------------------------------------------------------------------------------
    def _summarise(self, force: bool = False) -> None:
        if not force and self.clock() < self._next_summary:
            return
        self._next_summary = self.clock() + SUMMARY_SECONDS
        stats = self.stats
        log.info("%d events: %d predictions refined, %d stale (a newer watch or model came first), %d skipped",
                 stats.events, stats.refined, stats.stale, stats.skipped)

    def _sleep(self, seconds: float) -> None:
        deadline = self.clock() + seconds
        while not self._stopping and self.clock() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - self.clock())))
