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
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_K:
        raise InvalidInput(f"k must be a whole number from 1 to {MAX_K}, got {raw!r}", error="invalid_k")
    return int(raw)


class RecommendationService:
    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self.loaded = LoadedModel(store)
        self.titles = TitleCodes(store)

    # -- writes ------------------------------------------------------------------------------
    def record_watch(self, user_id, content_id, event_id=None, k: int | None = None) -> dict:
        user_id = validate_id(user_id, "user_id")
        content_id = validate_id(content_id, "content_id")
        if event_id is not None:
            event_id = validate_id(event_id, "event_id")
        code = self.titles.code_for(content_id)
        recorded = self.store.users.record_watch(user_id, content_id, code, time.time(), event_id)
        if recorded.duplicate_answer is not None:
            if recorded.duplicate_answer == b"pending":
                raise EventInFlight("this event_id is being recorded by another request; retry",
                                    headers={"Retry-After": "1"})
            metrics.duplicate_events.inc()
            return json.loads(recorded.duplicate_answer)
        metrics.watch_events.inc()
        previous = recorded.previous
        if previous is not None and code in previous.codes[: self.settings.cache_top_k]:
            metrics.prediction_hits.inc()
        wanted = max(self.settings.cache_top_k, k or 0)
        codes, source = self._predict(recorded.history, recorded.model_version, wanted)
        answer = {
            "user_id": user_id,
            "watched": content_id,
            "predicted_next": None,
            "model_version": recorded.model_version,
            "source": source,
        }
        if codes:
            ids = self.titles.ids_for(codes)
            answer["predicted_next"] = ids[0]
            if k:
                answer["recommendations"] = ids[:k]
        if source != "model":
            metrics.fallbacks_used.labels(step=source).inc()
        stored_answer = (event_id, json.dumps(answer).encode()) if event_id else None
        self._cache(user_id, recorded.model_version, recorded.history, codes, stored_answer)
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

    def _cache(self, user_id, version, history, codes, stored_answer=None) -> None:
        """Cache a prediction. A Redis at maxmemory refuses it: the answer is still right, only
        uncached. After a recorded watch, answering 503 would make the client send the watch
        again (recorded twice, or refused as in flight for the event-id TTL)."""
        try:
            self.store.users.save_prediction(user_id, version, history, codes, stored_answer)
        except StoreOutOfMemory:
            log.warning("Redis is out of memory: prediction for a user not cached")

    def _predict(self, history: np.ndarray, version: int, k: int) -> tuple[list[int], str]:
        """The fallback chain, one visible step each: the model for a user with history, then
        popular titles the user has not watched, then the catalog's first title."""
        model = self.loaded.for_version(version)
        if model is not None:
            if len(history):
                return model.recommend(history, k), "model"
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
