"""The model registry over HTTP: list published versions, activate one, roll back.

Every route here needs an admin key once API keys are configured (service/access.py). Switching
the version invalidates every cached prediction: a prediction's stamp includes the model
version it was computed with (store/user_state.py); this process serves the new version at once, the
others when the switch announcement reaches them (service/serving_model.py).
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from ..service.access import ADMIN
from . import inputs
from .routes import services

blueprint = Blueprint("nextwatch_admin", __name__, url_prefix="/admin")


@blueprint.before_request
def require_admin_key():
    services().access.require(ADMIN, request.headers.get("Authorization"), request.headers.get("X-API-Key"))


@blueprint.get("/models")
def list_models():
    return jsonify(services().admin.models())


@blueprint.post("/models/<version>/activate")
def activate_model(version: str):
    return jsonify(services().admin.activate_model(inputs.model_version(version)))


@blueprint.post("/models/rollback")
def rollback_model():
    return jsonify(services().admin.rollback_model())


@blueprint.get("/rules")
def get_rules():
    return jsonify(services().recommendations.rules.stored().to_json())


@blueprint.put("/rules")
def put_rules():
    """Replace the rules; the body's ``version`` must be the stored one (409 otherwise), so two
    editors cannot overwrite each other unseen."""
    # The one body allowed past MAX_BODY_BYTES: a full blocklist and boosts of long ids.
    request.max_content_length = inputs.MAX_RULES_BODY_BYTES
    body = inputs.json_object(request.content_type, request.headers.get("Content-Length"), request.stream.read,
                              max_bytes=inputs.MAX_RULES_BODY_BYTES)
    return jsonify(services().recommendations.rules.replace(body).to_json())
