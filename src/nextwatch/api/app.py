"""create_app(): wires settings, store and service into a Flask app."""

from __future__ import annotations

import time

from flask import Flask, g, request

from .. import metrics
from ..auth import AccessControl
from ..service import RecommendationService
from ..settings import Settings, load_settings
from ..store import Store
from . import admin_routes, catalog_routes, errors, page_routes, routes
from .serving_routes import ServingRoutes

MAX_BODY_BYTES = 64 * 1024


def create_app(settings: Settings | None = None, store: Store | None = None) -> Flask:
    settings = settings or load_settings()
    store = store or Store.from_settings(settings)
    app = Flask("nextwatch")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False
    service = RecommendationService(settings, store)
    access = AccessControl(settings, store)
    app.extensions["nextwatch"] = service
    app.extensions["nextwatch.access"] = access
    errors.register(app)
    app.register_blueprint(routes.blueprint)
    app.register_blueprint(admin_routes.blueprint)
    app.register_blueprint(catalog_routes.blueprint)
    app.register_blueprint(page_routes.blueprint)
    _measure_latency(app)
    app.wsgi_app = ServingRoutes(app.wsgi_app, service, access, MAX_BODY_BYTES)
    return app


def _measure_latency(app: Flask) -> None:
    @app.before_request
    def start_timer():
        g.started = time.perf_counter()

    @app.after_request
    def observe(response):
        started = g.pop("started", None)
        if started is not None:
            endpoint = request.url_rule.rule if request.url_rule else "unmatched"
            metrics.request_latency.labels(endpoint, request.method, str(response.status_code)).observe(
                time.perf_counter() - started
            )
        return response
