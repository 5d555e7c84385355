"""The catalog over HTTP: GET /titles (paged, filtered), GET /titles/<id>, GET /genres.

Open like GET /recommend: the catalog holds nothing secret, and the page (page_routes.py)
reads it before any key is entered. The reading logic is catalog_service.py.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from ..catalog_service import CatalogService, TitleQuery

blueprint = Blueprint("nextwatch_catalog", __name__)


@blueprint.record_once
def create_service(state) -> None:
    # One CatalogService (and so one catalog snapshot) per app, on the app's store.
    state.app.extensions["nextwatch.catalog"] = CatalogService(state.app.extensions["nextwatch"].store)


def catalog() -> CatalogService:
    return current_app.extensions["nextwatch.catalog"]


@blueprint.get("/titles")
def list_titles():
    return jsonify(catalog().titles(TitleQuery.parse(request.args)))


@blueprint.get("/titles/<content_id>")
def get_title(content_id: str):
    return jsonify(catalog().title(content_id))


@blueprint.get("/genres")
def list_genres():
    return jsonify(catalog().genres())
