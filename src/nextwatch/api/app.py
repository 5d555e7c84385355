"""create_app(): the HTTP layer over the services that ``service.build_services`` builds."""

from __future__ import annotations

import time

from flask import Flask, g, request

from ..service import Services, build_services
from ..settings import Settings, load_settings
from . import admin_routes, catalog_routes, errors, page_routes, routes
from .inputs import MAX_BODY_BYTES
from .responses import LatencyObserver
from .serving_routes import ServingRoutes


def create_app(settings: Settings | None = None, store=None, services: Services | None = None) -> Flask:
    """The app for ``settings`` (read from the environment if None), over ``services``, or
    over services built on ``store`` (a ``nextwatch.store.Store``; built from the settings if
    None)."""
    settings = settings or load_settings()
    services = services or build_services(settings, store)
    app = Flask("nextwatch")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False
    app.extensions["nextwatch"] = services
    errors.register(app)
    app.register_blueprint(routes.blueprint)
    app.register_blueprint(admin_routes.blueprint)
    app.register_blueprint(catalog_routes.blueprint)
    app.register_blueprint(page_routes.blueprint)
    latency = LatencyObserver()
    _measure_latency(app, latency)
    app.wsgi_app = ServingRoutes(app.wsgi_app, services, latency)
    return app


def _measure_latency(app: Flask, latency: LatencyObserver) -> None:
    @app.before_request
    def start_timer():
        g.started = time.perf_counter()

    @app.after_request
    def observe(response):
        started = g.pop("started", None)
        if started is not None:
            endpoint = request.url_rule.rule if request.url_rule else "unmatched"
            latency.observe(endpoint, request.method, response.status_code, started)
        return response
