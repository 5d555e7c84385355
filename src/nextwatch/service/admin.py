"""Operating the service: the model registry (list, activate, roll back), readiness, and the
serving model's facts for /metrics."""

from __future__ import annotations

import time

from ..errors import NotFound, StoreUnavailable
from ..store import Store
from .serving_model import ServingModel


class ServiceAdmin:
    def __init__(self, store: Store, serving: ServingModel):
        self.store = store
        self.serving = serving

    def model_info(self) -> dict | None:
        """Facts about the published model for /metrics (see metrics.ModelInfoCollector)."""
        try:
            version = self.store.models.current_version()
            if not version:
                return None
            meta = self.store.models.metadata(version)
        except StoreUnavailable:
            return None
        info = {"version": version, "trained_at": float(meta.get("trained_at", 0.0)), "now": time.time(),
                "serving_version": self.serving.known_version()}
        for field, key in (("duration_seconds", "duration_seconds"), ("ndcg_at_10", "ndcg@10")):
            if meta.get(key):
                info[field] = float(meta[key])
        if meta.get("time_capped") is not None:
            info["time_capped"] = 1.0 if meta["time_capped"] == "1" else 0.0
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
        self.serving.learn(version)  # this process at once; the others by the announcement
        return {"current": version, "previous": previous}

    def rollback_model(self) -> dict:
        previous = self.store.models.current_version()
        current = self.store.models.rollback()
        self.serving.learn(current)
        return {"current": current, "previous": previous}

    def readiness(self) -> tuple[bool, str]:
        if not self.store.reachable():
            return False, "Redis is unreachable"
        try:
            if not self.store.models.current_version():
                return False, "no model is published yet (run `nextwatch train`)"
        except StoreUnavailable:
            return False, "Redis is unreachable"
        return True, "ready"
