"""The serving logic, between the HTTP API and the store: one place that builds it from settings.

- ``recommendations.py``: record_watch() and recommend(), the cache, the model, the fallback chain;
- ``serving_model.py``: which model version serves, and that model, per process;
- ``titles.py``: content id <-> code;
- ``catalog.py``: the title catalog for GET /titles (a per-process snapshot);
- ``access.py``: API keys and the per-key rate limit;
- ``admin.py``: the model registry, readiness, the model's facts for /metrics;
- ``experiments.py``: A/B tests of models: arms, assignment, the report.

Dependencies point one way: api -> service -> store/model. Nothing here imports Flask.
"""

from __future__ import annotations

import dataclasses

from ..settings import Settings
from ..store import Store
from .access import AccessControl
from .admin import ServiceAdmin
from .catalog import CatalogService
from .experiments import Experiments
from .recommendations import RecommendationService


@dataclasses.dataclass
class Services:
    settings: Settings
    store: Store
    recommendations: RecommendationService
    catalog: CatalogService
    access: AccessControl
    admin: ServiceAdmin
    experiments: Experiments

    def close(self) -> None:
        self.recommendations.serving.close()
        self.store.close()


def build_services(settings: Settings, store: Store | None = None) -> Services:
    """Every serving part for ``settings``, on ``store`` (built from the settings if None)."""
    store = store or Store.from_settings(settings)
    recommendations = RecommendationService(settings, store)
    return Services(
        settings=settings,
        store=store,
        recommendations=recommendations,
        catalog=CatalogService(store),
        access=AccessControl(settings, store),
        admin=ServiceAdmin(store, recommendations.serving),
        experiments=recommendations.experiments,
    )


__all__ = ["Services", "build_services"]
