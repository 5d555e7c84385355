"""The model registry over HTTP: list published versions, activate one, roll back.

Every route here needs an admin key once API keys are configured (auth.py). Switching the
version invalidates every cached prediction at once: a prediction's stamp includes the model
version it was computed with (store/users.py), and each worker loads the newly current model on
its next request.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from ..auth import ADMIN, AccessControl
from ..errors import InvalidInput
from .routes import service

blueprint = Blueprint("nextwatch_admin", __name__, url_prefix="/admin")


def access() -> AccessControl:
    return current_app.extensions["nextwatch.access"]


@blueprint.before_request
def require_admin_key():
    access().require(ADMIN, request.headers.get("Authorization"), request.headers.get("X-API-Key"))


@blueprint.get("/models")
def list_models():
    return jsonify(service().models())


@blueprint.post("/models/<version>/activate")
def activate_model(version: str):
    if not version.isdigit() or int(version) < 1:
        raise InvalidInput(f"version must be a whole number from 1, got {version!r}", error="invalid_version")
    return jsonify(service().activate_model(int(version)))


@blueprint.post("/models/rollback")
def rollback_model():
    return jsonify(service().rollback_model())
