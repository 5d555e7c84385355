"""The Flask routes: health, readiness, metrics, the OpenAPI document.

The two hot routes, POST /watched and GET /recommend/<user_id>, are served in front of Flask
by serving_routes.py."""

from __future__ import annotations

import importlib.resources

from flask import Blueprint, Response, current_app, jsonify

from .. import metrics
from ..service import Services

blueprint = Blueprint("nextwatch", __name__)


def services() -> Services:
    return current_app.extensions["nextwatch"]


@blueprint.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz():
    ready, reason = services().admin.readiness()
    return jsonify({"status": "ready" if ready else "not_ready", "detail": reason}), 200 if ready else 503


@blueprint.get("/metrics")
def prometheus_metrics():
    return Response(metrics.render(services().admin.model_info), mimetype="text/plain; version=0.0.4; charset=utf-8")


@blueprint.get("/openapi.json")
def openapi():
    document = importlib.resources.files(__package__).joinpath("openapi.json").read_text()
    return Response(document, mimetype="application/json")
