"""record_watch() and recommend(): the serving logic between the API and the store.

Per request the store is asked at most twice: one round trip to read (or, for a watch, to
record) and one to cache the new prediction. The model and the title-code table live in the
process and are reloaded only when Redis says that they changed.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np

from . import metrics
from .errors import EventInFlight, InvalidInput, NotFound, StoreOutOfMemory, StoreUnavailable
from .ids import validate_id
from .model import NextTitleModel
from .settings import Settings
from .store import Store
from .store.users import PendingWatch

MAX_K = 100
log = logging.getLogger("nextwatch.service")


class LoadedModel:
    """The model this process scores with; reloaded when the published version changes."""

    def __init__(self, store: Store):
        self.store = store
        self.model: NextTitleModel | None = None
        self._lock = threading.Lock()

    def for_version(self, version: int) -> NextTitleModel | None:
        model = self.model
        if version == 0:
            return None
        if model is not None and model.version == version:
            return model
        with self._lock:
            if self.model is None or self.model.version != version:
                loaded = self.store.models.load(version)
                if loaded is not None:
                    self.model = loaded
            return self.model


class TitleCodes:
    """content_id <-> code, copied from the store and refreshed when a code is not known."""

    def __init__(self, store: Store):
        self.store = store
        self.ids: list[str] = []
        self.codes: dict[str, int] = {}
        self._lock = threading.Lock()

    def refresh(self) -> None:
        with self._lock:
            ids = self.store.catalog.all_ids()
            self.ids, self.codes = ids, {content_id: code for code, content_id in enumerate(ids)}

    def code_for(self, content_id: str) -> int:
        code = self.codes.get(content_id)
        if code is None:
            code = self.store.catalog.register([content_id])[0]
            with self._lock:
                self.codes[content_id] = code
        return code

    def ids_for(self, codes) -> list[str]:
        codes = codes.tolist() if isinstance(codes, np.ndarray) else [int(c) for c in codes]
        if codes and max(codes) >= len(self.ids):
            self.refresh()
        return [self.ids[c] for c in codes]


def parse_k(raw: str | None) -> int | None:
    if raw is None:
        return None
    # isascii: str.isdigit() also accepts digits such as "²" that int() refuses; the length
    # cap keeps int() away from huge inputs.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or not 1 <= int(raw) <= MAX_K:
        raise InvalidInput(f"k must be a whole number from 1 to {MAX_K}, got {raw!r}", error="invalid_k")
    return int(raw)


class RecommendationService:
    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self.loaded = LoadedModel(store)
        self.titles = TitleCodes(store)
        # A request stores its answer within a Redis timeout or two of recording the event; a
        # pending marker older than this belongs to a request that failed.
        self._orphaned_after = max(3.0, 2 * settings.redis_timeout_seconds)

    # -- writes ------------------------------------------------------------------------------
    def record_watch(self, user_id, content_id, event_id=None, k: int | None = None) -> dict:
        user_id = validate_id(user_id, "user_id")
        content_id = validate_id(content_id, "content_id")
        if event_id is not None:
            event_id = validate_id(event_id, "event_id")
        code = self.titles.code_for(content_id)
        recorded = self.store.users.record_watch(user_id, content_id, code, time.time(), event_id)
        if recorded.duplicate_answer is not None:
            return self._repeated_event(user_id, event_id, recorded.duplicate_answer, k)
        metrics.watch_events.inc()
        previous = recorded.previous
        if previous is not None and code in previous.codes[: self.settings.cache_top_k]:
            metrics.prediction_hits.inc()
        wanted = max(self.settings.cache_top_k, k or 0)
        # The table's answer: the sequence model's blend is computed off this path, by the
        # refiner, which overwrites this cache entry when it is still current.
        codes, source = self._predict(recorded.history, recorded.model_version, wanted, with_sequence=False)
        answer = self._watch_answer(user_id, content_id, recorded.model_version, codes, source, k)
        if source != "model":
            metrics.fallbacks_used.labels(step=source).inc()
        stored_answer = (event_id, json.dumps(answer).encode()) if event_id else None
        self._cache(user_id, recorded.model_version, recorded.history, codes, stored_answer, after_watch=True)
        return answer

    def _watch_answer(self, user_id, content_id, version, codes, source, k) -> dict:
        answer = {"user_id": user_id, "watched": content_id, "predicted_next": None, "model_version": version,
                  "source": source}
        if codes:
            ids = self.titles.ids_for(codes)
            answer["predicted_next"] = ids[0]
            if k:
                answer["recommendations"] = ids[:k]
        return answer

    def _repeated_event(self, user_id: str, event_id: str, stored: bytes, k: int | None) -> dict:
        """An event id seen before: its stored answer. While the request that recorded it has
        not stored one, 409 (in flight); once that request has clearly failed (Redis or the
        worker went away between recording and storing), the same answer, computed again from
        what the marker holds (scoring is deterministic), and stored. Without this a client
        whose watch was recorded but answered 503 got 409 for the event-id TTL."""
        if not stored.startswith(b"pending"):
            metrics.duplicate_events.inc()
            return json.loads(stored)
        pending = PendingWatch.decode(stored)  # None: the bare marker of older versions
        if pending is None or time.time() - pending.recorded_at < self._orphaned_after:
            raise EventInFlight("this event_id is being recorded by another request; retry",
                                headers={"Retry-After": "1"})
        metrics.duplicate_events.inc()
        codes, source = self._predict(pending.history, pending.model_version,
                                      max(self.settings.cache_top_k, k or 0), with_sequence=False)
        watched = self.titles.ids_for(pending.history[-1:])[0]
        answer = self._watch_answer(user_id, watched, pending.model_version, codes, source, k)
        try:
            self.store.users.save_answer(user_id, event_id, json.dumps(answer).encode())
        except StoreUnavailable:
            log.warning("answer to a recovered event id not stored; the next retry computes it again")
        return answer

    # -- reads -------------------------------------------------------------------------------
    def recommend(self, user_id, k: int | None = None) -> dict:
        user_id = validate_id(user_id, "user_id")
        try:
            state = self.store.users.read(user_id)
        except StoreUnavailable:
            return self._degraded_answer(user_id, k)
        wanted = k or 1
        cached = state.cached
        if cached is not None and len(cached.codes) >= wanted and cached.is_valid_for(state.model_version, state.history):
            metrics.cache_hits.inc()
            ids = self.titles.ids_for(cached.codes[:wanted])
            return self._answer(user_id, ids, k, state.model_version, cache_hit=True, source="cache")
        metrics.cache_misses.inc()
        codes, source = self._predict(state.history, state.model_version, max(self.settings.cache_top_k, wanted))
        if len(state.history) and codes:
            self._cache(user_id, state.model_version, state.history, codes)
        if source != "model":
            metrics.fallbacks_used.labels(step=source).inc()
        return self._answer(user_id, self.titles.ids_for(codes[:wanted]), k, state.model_version,
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

    def _predict(self, history: np.ndarray, version: int, k: int,
                 with_sequence: bool = True) -> tuple[list[int], str]:
        """The fallback chain, one visible step each: the model for a user with history, then
        popular titles the user has not watched, then the catalog's first title.
        ``with_sequence=False``: the table alone, also when the model has a sequence part."""
        model = self.loaded.for_version(version)
        if model is not None:
            if len(history):
                return model.recommend(history, k, with_sequence=with_sequence), "model"
            return model.popular(k, exclude=history), "popular"
        if not self.titles.ids:
            self.titles.refresh()
        watched = set(history.tolist())
        first = [c for c in range(min(len(self.titles.ids), k + len(watched))) if c not in watched]
        return first[:k], "catalog"

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
        model = self.loaded.model
        if model is None or not self.titles.ids:
            raise StoreUnavailable("Redis is unreachable and this process holds no model yet")
        metrics.degraded_responses.inc()
        metrics.fallbacks_used.labels(step="degraded").inc()
        answer = self._answer(user_id, self.titles.ids_for(model.popular(k or 1)), k, model.version,
                              cache_hit=False, source="popular")
        answer["degraded"] = True
        return answer

    # -- operations --------------------------------------------------------------------------
    def model_info(self) -> dict | None:
        """Facts about the published model for /metrics (see metrics.ModelInfoCollector)."""
        try:
            version = self.store.models.current_version()
            if not version:
                return None
            meta = self.store.models.metadata(version)
        except StoreUnavailable:
            return None
        info = {"version": version, "trained_at": float(meta.get("trained_at", 0.0)), "now": time.time()}
        for field, key in (("duration_seconds", "duration_seconds"), ("ndcg_at_10", "ndcg@10")):
            if meta.get(key):
                info[field] = float(meta[key])
        return info

    def models(self) -> dict:
        """Every published version with its metadata, and which one is current."""
        current = self.store.models.current_version()
        versions = []
        for version in self.store.models.versions():
            meta = {k: v for k, v in self.store.models.metadata(version).items() if not k.startswith("chunks:")}
            versions.append({"version": version, "current": version == current, "metadata": meta})
        return {"current": current, "versions": versions}

    def activate_model(self, version: int) -> dict:
        previous = self.store.models.current_version()
        try:
            self.store.models.activate(version)
        except KeyError:
            raise NotFound(f"model version {version} is not published (see GET /admin/models)",
                           error="unknown_model_version") from None
        return {"current": version, "previous": previous}

    def rollback_model(self) -> dict:
        previous = self.store.models.current_version()
        return {"current": self.store.models.rollback(), "previous": previous}

    def readiness(self) -> tuple[bool, str]:
        if not self.store.ping():
            return False, "Redis is unreachable"
        if not self.store.models.current_version():
            return False, "no model is published yet (run `nextwatch train`)"
        return True, "ready"
