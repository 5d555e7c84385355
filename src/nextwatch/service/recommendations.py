"""record_watch() and recommend(): the serving logic between the API and the store.

Per request the store is asked at most twice: one round trip to read (or, for a watch, to
record) and one to cache the new prediction. The model, its version and the title-code table
live in the process (``serving_model.py``, ``titles.py``).

A watch is answered with the current model's best prediction, the sequence model's blend
included when the model has one, and exactly that prediction is cached: the next GET answers it
until the next watch or model version. The API has validated every id and ``k`` before they
reach this module.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .. import metrics
from ..errors import EventInFlight, StoreOutOfMemory, StoreUnavailable
from ..settings import Settings
from ..store import Store
from ..store.users import RecordedWatch, RepeatedEvent
from .experiments import Experiments
from .serving_model import ServingModel
from .titles import CatalogCodes

log = logging.getLogger("nextwatch.service")


class RecommendationService:
    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self.serving = ServingModel(store, settings.model_refresh_seconds)
        self.titles = CatalogCodes(store)
        self.experiments = Experiments(store)
        # A request stores its answer within a Redis timeout or two of recording the event; a
        # pending marker older than this belongs to a request that failed.
        self._orphaned_after = max(3.0, 2 * settings.redis_timeout_seconds)

    # -- writes ------------------------------------------------------------------------------
    def record_watch(self, user_id: str, content_id: str, event_id: str | None = None,
                     k: int | None = None) -> dict:
        code = self.titles.code_for(content_id)
        version = self.serving.version()
        recorded = self.store.users.record_watch(user_id, content_id, code, time.time(), event_id, version)
        if isinstance(recorded, RepeatedEvent):
            return self._repeated_event(user_id, event_id, recorded, k)
        metrics.watch_events.inc()
        self._count_prediction_hit(recorded, code)
        if recorded.shown_lately:
            metrics.impression_hits.inc()
        codes, source = self._predict(recorded.history, version, max(self.settings.cache_top_k, k or 0))
        answer = self._watch_answer(user_id, content_id, version, codes, source, k)
        stored_answer = (event_id, answer) if event_id else None
        self._cache(user_id, version, recorded.history, codes, stored_answer, after_watch=True)
        return answer

    def _count_prediction_hit(self, recorded: RecordedWatch, code: int) -> None:
        previous = recorded.previous
        if previous is not None and code in previous.codes[: self.settings.cache_top_k]:
            metrics.prediction_hits.inc()

    def _watch_answer(self, user_id, content_id, version, codes, source, k) -> dict:
        answer = {"user_id": user_id, "watched": content_id, "predicted_next": None, "model_version": version,
                  "source": source}
        if codes:
            ids = self.titles.ids_for(codes[: max(k or 1, 1)])
            answer["predicted_next"] = ids[0]
            if k:
                answer["recommendations"] = ids[:k]
        return answer

    def _repeated_event(self, user_id: str, event_id: str, repeated: RepeatedEvent, k: int | None) -> dict:
        """An event id seen before: its stored answer. While the request that recorded it has
        not stored one, 409 (in flight); once that request has clearly failed (Redis or the
        worker went away between recording and storing), the same answer, computed again from
        what the marker holds (scoring is deterministic), and stored. Without this a client
        whose watch was recorded but answered 503 got 409 for the event-id TTL."""
        if repeated.answer is not None:
            metrics.duplicate_events.inc()
            return repeated.answer
        pending = repeated.pending  # None: the bare marker of older versions
        if pending is None or time.time() - pending.recorded_at < self._orphaned_after:
            raise EventInFlight("this event_id is being recorded by another request; retry",
                                headers={"Retry-After": "1"})
        metrics.duplicate_events.inc()
        codes, source = self._predict(pending.history, pending.model_version,
                                      max(self.settings.cache_top_k, k or 0))
        watched = self.titles.ids_for(pending.history[-1:])[0]
        answer = self._watch_answer(user_id, watched, pending.model_version, codes, source, k)
        try:
            self.store.users.save_answer(user_id, event_id, answer)
        except StoreUnavailable:
            log.warning("answer to a recovered event id not stored; the next retry computes it again")
        return answer

    def record_impressions(self, user_id: str, content_ids: list[str], event_id: str | None = None) -> dict:
        """Titles shown to a user: counted for frequency capping (a title shown
        NEXTWATCH_IMPRESSION_CAP times without a watch is demoted for the user) and logged. A
        repeated ``event_id`` is recorded once and answered the same way."""
        codes = [self.titles.code_for(content_id) for content_id in content_ids]
        recorded = self.store.users.record_impressions(user_id, content_ids, codes, time.time(), event_id)
        if not recorded.duplicate:
            metrics.impressions_shown.inc(len(content_ids))
        return recorded.answer

    # -- reads -------------------------------------------------------------------------------
    def recommend(self, user_id: str, k: int | None = None) -> dict:
        try:
            state = self.store.users.read(user_id)
            version = self.serving.version()
        except StoreUnavailable:
            return self._degraded_answer(user_id, k)
        wanted = k or 1
        cached = state.cached
        if cached is not None and len(cached.codes) >= wanted and cached.is_valid_for(version, state.history):
            metrics.cache_hits.inc()
            ids = self.titles.ids_for(cached.codes[:wanted])
            return self._answer(user_id, ids, k, version, cache_hit=True, source="cache")
        metrics.cache_misses.inc()
        codes, source = self._predict(state.history, version, max(self.settings.cache_top_k, wanted))
        if len(state.history) and codes:
            self._cache(user_id, version, state.history, codes)
        return self._answer(user_id, self.titles.ids_for(codes[:wanted]), k, version,
                            cache_hit=False, source=source)

    def _cache(self, user_id, version, history, codes, stored_answer=None, after_watch=False) -> None:
        """Cache a prediction. A Redis at maxmemory refuses it, or one that just went away
        fails it: the answer is still right, only uncached. After a recorded watch, answering
        503 would make the client send the watch again (recorded twice without an event id);
        after a read, the reader would get a 503 for an answer it already has."""
        try:
            self.store.users.save_prediction(user_id, version, history, codes, stored_answer, after_watch)
        except StoreOutOfMemory:
            log.warning("Redis is out of memory: prediction for a user not cached")
        except StoreUnavailable:
            log.warning("Redis went away after the request's first round trip: prediction not cached")

    def _predict(self, history: np.ndarray, version: int, k: int) -> tuple[list[int], str]:
        """The fallback chain, one visible step each, each counted: the model for a user with
        history, then popular titles the user has not watched, then the catalog's first titles."""
        model = self.serving.model_for(version)
        if model is not None and len(history):
            return model.recommend(history, k), "model"
        if model is not None:
            source, codes = "popular", model.popular(k, exclude=history)
        else:
            watched = set(history.tolist())
            source = "catalog"
            codes = [c for c in self.titles.first_codes(k + len(watched)) if c not in watched][:k]
        metrics.fallbacks_used.labels(step=source).inc()
        return codes, source

    def _answer(self, user_id, ids, k, version, *, cache_hit, source) -> dict:
        answer = {
            "user_id": user_id,
            "recommendation": ids[0] if ids else None,
            "cache_hit": cache_hit,
            "fallback_used": source not in ("cache", "model"),
            "model_version": version,
            "source": source,
        }
        if k:
            answer["recommendations"] = ids
        return answer

    def _degraded_answer(self, user_id: str, k: int | None) -> dict:
        """Redis is down: popular titles from the model this process already holds."""
        model = self.serving.model
        if model is None or not self.titles.ids:
            raise StoreUnavailable("Redis is unreachable and this process holds no model yet")
        metrics.degraded_responses.inc()
        metrics.fallbacks_used.labels(step="degraded").inc()
        answer = self._answer(user_id, self.titles.ids_for(model.popular(k or 1)), k, model.version,
                              cache_hit=False, source="popular")
        answer["degraded"] = True
        return answer
