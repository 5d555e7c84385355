"""The page to try the service (GET /, its files under /static/) and the counters it shows
(GET /stats).

The page is plain HTML, CSS and JavaScript in api/static/, no build step. It talks to the API
with the same public routes as any client; a Content-Security-Policy allows it nothing else
(no inline code, no other origin), so a title name from an imported file can never run as
script.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, jsonify, send_from_directory

from .. import metrics
from ..errors import NotFound

blueprint = Blueprint("nextwatch_page", __name__)

STATIC = Path(__file__).with_name("static")
# Served with these types and only these: an explicit list, not a folder, so nothing placed
# beside the page by accident is served, and every type is the one openapi.json documents.
TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _send(name: str):
    response = send_from_directory(STATIC, name, mimetype=TYPES[Path(name).suffix], max_age=60,
                                   conditional=False, etag=False)
    response.headers.update(SECURITY_HEADERS)
    return response


@blueprint.get("/")
def page():
    return _send("index.html")


@blueprint.get("/static/<name>")
def static_file(name: str):
    if Path(name).suffix not in TYPES or name not in {p.name for p in STATIC.iterdir() if p.is_file()}:
        raise NotFound(f"no file {name[:80]!r} in the page's files", error="not_found")
    return _send(name)


@blueprint.get("/stats")
def stats():
    return jsonify(metrics.serving_counts())
