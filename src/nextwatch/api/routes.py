"""The routes: parse and check the request, call the service, return JSON."""

from __future__ import annotations

import importlib.resources
import json

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from .. import metrics
from ..errors import InvalidInput, NextwatchError
from ..service import RecommendationService, parse_k

blueprint = Blueprint("nextwatch", __name__)


class UnsupportedMediaType(NextwatchError):
    status = 415
    error = "unsupported_media_type"


def service() -> RecommendationService:
    return current_app.extensions["nextwatch"]


def json_object_body() -> dict:
    """The body as a JSON object, or a 4xx naming what is wrong with it."""
    if not request.mimetype == "application/json":
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {request.mimetype or 'none'!r}")
    if request.content_length is not None and request.content_length > current_app.config["MAX_CONTENT_LENGTH"]:
        raise RequestEntityTooLarge()
    raw = request.get_data(cache=False)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as problem:
        raise InvalidInput(f"the body is not valid JSON: {problem}", error="malformed_json") from None
    if not isinstance(body, dict):
        raise InvalidInput(f"the body must be a JSON object, got {type(body).__name__}", error="not_an_object")
    return body


def required(body: dict, field: str):
    if field not in body:
        raise InvalidInput(f"the field {field!r} is required", error="missing_field")
    return body[field]


@blueprint.post("/watched")
def watched():
    body = json_object_body()
    answer = service().record_watch(
        required(body, "user_id"),
        required(body, "content_id"),
        event_id=body.get("event_id"),
        k=parse_k(request.args.get("k")),
    )
    return jsonify(answer)


@blueprint.get("/recommend/<user_id>")
def recommend(user_id: str):
    return jsonify(service().recommend(user_id, k=parse_k(request.args.get("k"))))


@blueprint.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz():
    ready, reason = service().readiness()
    return jsonify({"status": "ready" if ready else "not_ready", "detail": reason}), 200 if ready else 503


@blueprint.get("/metrics")
def prometheus_metrics():
    return Response(metrics.render(service().model_info), mimetype="text/plain; version=0.0.4; charset=utf-8")


@blueprint.get("/openapi.json")
def openapi():
    document = importlib.resources.files(__package__).joinpath("openapi.json").read_text()
    return Response(document, mimetype="application/json")
