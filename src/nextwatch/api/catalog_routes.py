"""The catalog over HTTP: GET /titles (paged, filtered), GET /titles/<id>, GET /genres.

Open like GET /recommend: the catalog holds nothing secret, and the page (page_routes.py)
reads it before any key is entered. The reading logic is service/catalog.py.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from . import inputs
from .routes import services

blueprint = Blueprint("nextwatch_catalog", __name__)


@blueprint.get("/titles")
def list_titles():
    return jsonify(services().catalog.titles(inputs.title_query(request.args)))


@blueprint.get("/titles/<content_id>")
def get_title(content_id: str):
    return jsonify(services().catalog.title(inputs.content_id(content_id)))


@blueprint.get("/genres")
def list_genres():
    return jsonify(services().catalog.genres())
