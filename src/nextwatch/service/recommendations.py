"""record_watch(), recommend() and record_impressions(): the serving logic between the API and
the store.

Per request the store is asked at most twice: one round trip to read (or, for a watch, to
record) and one to cache the new prediction. The model, its version, the catalog, the rules and
the experiments live in the process (``serving_model.py``, ``titles.py``, ``rules.py``,
``experiments.py``); ``ranking.py`` turns a history into titles.

A watch is answered with the current model's best prediction (the sequence model's blend
included), and that ranking is cached: the next GET answers the same titles until the next
watch, model version or rules change. A request's filters and the user's demoted titles are
taken out of the cached ranking; the model ranks again only when too few titles remain. The API
has validated every id, ``k`` and filter before they reach this module.
"""

from __future__ import annotations

import logging
import time

from .. import metrics
from ..errors import EventInFlight, StoreOutOfMemory, StoreUnavailable
from ..settings import Settings
from ..store import Store
from ..store.user_state import RecordedWatch, RepeatedEvent
from .experiments import Experiments
from .ranking import CONFIG_CURRENT, Ranker, Ranking, Variant, plain_variant
from .rules import RuleBook, Rules
from .serving_model import ServingModel
from .title_facets import Filters
from .titles import CatalogCodes

log = logging.getLogger("nextwatch.service")
NO_FILTERS = Filters()
NEW_TITLE_DAYS = 1.0  # "new" in the count of recommended new titles: out for at most a day


class RecommendationService:
    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self.serving = ServingModel(store, settings.model_refresh_seconds)
        self.titles = CatalogCodes(store)
        self.rules = RuleBook(store)
        self.experiments = Experiments(store)
        self.ranker = Ranker(self.titles)
        # A request stores its answer within a Redis timeout or two of recording the event; a
        # pending marker older than this belongs to a request that failed.
        self._orphaned_after = max(3.0, 2 * settings.redis_timeout_seconds)

    # -- writes ------------------------------------------------------------------------------
    def record_watch(self, user_id: str, content_id: str, event_id: str | None = None, k: int | None = None,
                     filters: Filters = NO_FILTERS, explain: bool = False) -> dict:
        code = self.titles.code_for(content_id)
        self.titles.keep_fresh()
        variant, rules = self._variant(user_id)
        recorded = self.store.users.record_watch(user_id, content_id, code, time.time(), event_id, variant.version)
        if isinstance(recorded, RepeatedEvent):
            return self._repeated_event(user_id, event_id, recorded, k)
        metrics.watch_events.inc()
        hit = self._count_prediction_hit(recorded, code)
        if recorded.shown_lately:
            metrics.impression_hits.inc()
        model = self.serving.model_for(variant.version)
        ranking = self.ranker.rank(model, variant, rules, recorded.history, max(self.settings.cache_top_k, k or 0))
        self._count_source(ranking.source)
        shown, answered = self._for_request(model, variant, rules, recorded.history, ranking, k or 1, filters, None)
        answer = self._watch_answer(user_id, content_id, variant, shown, answered.source, k)
        if explain:
            answer["explanations"] = self.ranker.explain(model, recorded.history, answered, shown[: k or 1])
        stored_answer = (event_id, answer) if event_id else None
        counts = self._experiment_counts(user_id, variant, watches=1, hits=int(hit))
        self._cache(user_id, variant, recorded.history, self._cacheable(ranking), stored_answer, after_watch=True,
                    extra=counts)
        return answer

    def _count_prediction_hit(self, recorded: RecordedWatch, code: int) -> bool:
        previous = recorded.previous
        # As a list: ``in`` over a NumPy array compares element-wise in NumPy, ten times slower.
        hit = previous is not None and code in previous.codes[: self.settings.cache_top_k].tolist()
        if hit:
            metrics.prediction_hits.inc()
        return hit

    def _watch_answer(self, user_id, content_id, variant: Variant, codes, source, k) -> dict:
        answer = {"user_id": user_id, "watched": content_id, "predicted_next": None, "model_version": variant.version,
                  "source": source}
        if codes:
            ids = self.titles.ids_for(codes[: max(k or 1, 1)])
            answer["predicted_next"] = ids[0]
            if k:
                answer["recommendations"] = ids[:k]
            self._count_new(codes[: k or 1])
        self._label(answer, variant)
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
        variant, rules = self._variant(user_id)
        variant = Variant(pending.model_version, variant.config, variant.rules_version, variant.experiment, variant.arm)
        model = self.serving.model_for(pending.model_version)
        ranking = self.ranker.rank(model, variant, rules, pending.history, max(self.settings.cache_top_k, k or 0))
        watched = self.titles.ids_for(pending.history[-1:])[0]
        answer = self._watch_answer(user_id, watched, variant, ranking.codes, ranking.source, k)
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
            variant, _rules = self._variant(user_id)
            if variant.arm is not None:
                metrics.experiment_impressions.labels(variant.experiment, variant.arm).inc(len(content_ids))
                self._send_counts(user_id, self._experiment_counts(user_id, variant, impressions=len(content_ids)))
        return recorded.answer

    # -- reads -------------------------------------------------------------------------------
    def recommend(self, user_id: str, k: int | None = None, filters: Filters = NO_FILTERS,
                  explain: bool = False) -> dict:
        try:
            state = self.store.users.read(user_id)
            self.titles.keep_fresh()
            variant, rules = self._variant(user_id)
        except StoreUnavailable:
            return self._degraded_answer(user_id, k)
        wanted = k or 1
        demoted = state.demoted(time.time()) if len(state.impressions) else None
        cached = state.cached
        if cached is not None and cached.is_valid_for(variant.stamp_key, state.history):
            kept = self.ranker.keeps(cached.codes, rules, filters, demoted, limit=wanted)
            if len(kept) == wanted:
                metrics.cache_hits.inc()
                answer = self._answer(user_id, kept, k, variant, cache_hit=True, source="cache")
                if explain:
                    model = self.serving.model_for(variant.version)
                    ranking = self.ranker.rank(model, variant, rules, state.history, len(cached.codes))
                    answer["explanations"] = self.ranker.explain(model, state.history, ranking, kept)
                return answer
            valid = True  # too few left once filtered: ranked again with the filters, not cached
        else:
            valid = False
        metrics.cache_misses.inc()
        model = self.serving.model_for(variant.version)
        depth = max(self.settings.cache_top_k, wanted)
        if valid:
            ranking = self.ranker.rank(model, variant, rules, state.history, depth, filters, demoted)
            shown = ranking.codes
        else:
            ranking = self.ranker.rank(model, variant, rules, state.history, depth)
            if len(state.history) and ranking.codes:
                self._cache(user_id, variant, state.history, self._cacheable(ranking))
            shown, ranking = self._for_request(model, variant, rules, state.history, ranking, wanted, filters, demoted)
        self._count_source(ranking.source)
        answer = self._answer(user_id, shown[:wanted], k, variant, cache_hit=False, source=ranking.source)
        if explain:
            answer["explanations"] = self.ranker.explain(model, state.history, ranking, shown[:wanted])
        return answer

    # -- the steps -----------------------------------------------------------------------------
    def _variant(self, user_id: str) -> tuple[Variant, Rules]:
        """What serves this user (the running experiment's arm, else the current model) and the
        rules in force."""
        rules = self.rules.current()
        version = self.serving.version()
        experiment = self.experiments.running()
        if experiment is None:
            return plain_variant(version, rules.version), rules
        arm = experiment.arm_for(user_id)
        if arm.version is not None:
            return Variant(arm.version, CONFIG_CURRENT, rules.version, experiment.name, arm.name), rules
        return Variant(version, arm.target, rules.version, experiment.name, arm.name), rules

    def _for_request(self, model, variant, rules, history, ranking: Ranking, wanted: int, filters: Filters,
                     demoted) -> tuple[list[int], Ranking]:
        """The ranking's titles the request may see; ranked again with the filters inside when
        too few are left."""
        if not filters.any and (demoted is None or len(demoted) == 0):
            return ranking.codes, ranking
        kept = self.ranker.keeps(ranking.codes, rules, filters, demoted)
        if len(kept) >= wanted:
            return kept, ranking
        again = self.ranker.rank(model, variant, rules, history, max(self.settings.cache_top_k, wanted), filters, demoted)
        return again.codes, again

    def _cacheable(self, ranking: Ranking) -> list[int]:
        return ranking.codes[: self.settings.cache_top_k]

    def _cache(self, user_id, variant: Variant, history, codes, stored_answer=None, after_watch=False,
               extra=()) -> None:
        """Cache a prediction. A Redis at maxmemory refuses it, or one that just went away
        fails it: the answer is still right, only uncached. After a recorded watch, answering
        503 would make the client send the watch again (recorded twice without an event id);
        after a read, the reader would get a 503 for an answer it already has."""
        try:
            self.store.users.save_prediction(user_id, variant.stamp_key, history, codes, stored_answer, after_watch,
                                             extra=extra)
        except StoreOutOfMemory:
            log.warning("Redis is out of memory: prediction for a user not cached")
        except StoreUnavailable:
            log.warning("Redis went away after the request's first round trip: prediction not cached")

    def _experiment_counts(self, user_id: str, variant: Variant, **amounts: int) -> list[tuple]:
        if variant.arm is None:
            return []
        if amounts.get("watches"):
            metrics.experiment_watches.labels(variant.experiment, variant.arm).inc(amounts["watches"])
        if amounts.get("hits"):
            metrics.experiment_prediction_hits.labels(variant.experiment, variant.arm).inc(amounts["hits"])
        return self.store.experiments.count_commands(user_id, variant.experiment, variant.arm, **amounts)

    def _send_counts(self, user_id: str, commands: list[tuple]) -> None:
        if commands:
            try:
                self.store.users.run_in_users_slot(user_id, commands)
            except StoreUnavailable:
                log.warning("experiment counts not written: Redis went away")

    @staticmethod
    def _count_source(source: str) -> None:
        if source != "model":
            metrics.fallbacks_used.labels(step=source).inc()

    def _answer(self, user_id, codes, k, variant: Variant, *, cache_hit, source) -> dict:
        ids = self.titles.ids_for(codes)
        answer = {
            "user_id": user_id,
            "recommendation": ids[0] if ids else None,
            "cache_hit": cache_hit,
            "fallback_used": source not in ("cache", "model"),
            "model_version": variant.version,
            "source": source,
        }
        if k:
            answer["recommendations"] = ids
        self._label(answer, variant)
        self._count_new(codes)
        return answer

    @staticmethod
    def _label(answer: dict, variant: Variant) -> None:
        if variant.arm is not None:
            answer["experiment"] = variant.experiment
            answer["arm"] = variant.arm

    def _count_new(self, codes) -> None:
        """Count answers that show a title out for at most a day (the demo reports how often)."""
        if not len(codes):
            return
        metrics.recommendation_answers.inc()
        facets = self.titles.facets
        since = time.time() - NEW_TITLE_DAYS * 86_400
        if facets.latest_start < since:
            return  # no title of the catalog is that new: the usual case, one comparison
        for code in codes:
            if code < facets.count and facets.available_from[code] >= since:
                metrics.new_title_recommendations.inc()
                return

    def _degraded_answer(self, user_id: str, k: int | None) -> dict:
        """Redis is down: popular titles from the model this process already holds."""
        model = self.serving.model
        if model is None or not self.titles.ids:
            raise StoreUnavailable("Redis is unreachable and this process holds no model yet")
        metrics.degraded_responses.inc()
        metrics.fallbacks_used.labels(step="degraded").inc()
        available = self.titles.available()
        order = [c for c in model.popular_order[: 4 * (k or 1) + 64].tolist() if c >= len(available) or available[c]]
        answer = self._answer(user_id, order[: k or 1], k, Variant(model.version), cache_hit=False,
                              source="popular")
        answer["degraded"] = True
        return answer
