"""POST /watched and GET /recommend/<user_id>: the two routes on every request's hot path, as
plain WSGI in front of Flask. Every other path goes on to the Flask app.

Why not Flask routes: under load Flask's request context, routing, dispatch and response
objects cost about 120 us per GET and 200-270 us per POST, more than the service and Redis
together (bench/README.md, `bench/app_cost.py`); answered here, a cache hit costs about 80 us of
Python. These routes are still one implementation each: bad input, errors and the latency
metric are handled here, with the same JSON error shape and status mapping as the Flask part
(``NextwatchError.to_json`` / ``.status``).

POST /watched needs an API key once keys are configured (auth.py); while none is, the check is
one in-memory test and no header is read. GET /recommend is open.
"""

from __future__ import annotations

import json
import logging
import time
from http import HTTPStatus
from urllib.parse import parse_qs

from .. import metrics
from ..auth import WRITE, AccessControl
from ..errors import InvalidInput, NextwatchError, PayloadTooLarge, UnsupportedMediaType
from ..service import RecommendationService, parse_k

log = logging.getLogger("nextwatch.api")

WATCHED = "/watched"
RECOMMEND = "/recommend/<user_id>"
# (OpenAPI path, method) of every route served here, for the OpenAPI check.
ROUTES = [("/watched", "post"), ("/recommend/{user_id}", "get")]
INTERNAL_ERROR = {"error": "internal_error", "detail": "an unexpected error happened; see the server log"}


class ServingRoutes:
    def __init__(self, flask_app, service: RecommendationService, access: AccessControl, max_body_bytes: int):
        self.flask_app = flask_app
        self.service = service
        self.access = access
        self.max_body_bytes = max_body_bytes
        self._latency = {}  # (endpoint, method, status) -> histogram child, looked up once

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/watched":
            endpoint, allowed = WATCHED, ("POST",)
        elif path.startswith("/recommend/") and path.count("/") == 2 and len(path) > len("/recommend/"):
            endpoint, allowed = RECOMMEND, ("GET", "HEAD")
        else:
            return self.flask_app(environ, start_response)

        started = time.perf_counter()
        headers = [("Content-Type", "application/json")]
        try:
            if method not in allowed:
                status, answer = 405, {"error": "method_not_allowed",
                                       "detail": f"{path} accepts {', '.join(allowed)}, not {method}"}
                headers.append(("Allow", ", ".join(allowed)))
            elif endpoint == WATCHED:
                status, answer = 200, self._watched(environ)
            else:
                status, answer = 200, self.service.recommend(path[len("/recommend/"):], k=_k(environ))
        except NextwatchError as error:
            status, answer = error.status, error.to_json()
            headers.extend(error.headers.items())
        except Exception:
            log.exception("unhandled error on %s %s", method, path)
            status, answer = 500, INTERNAL_ERROR
        body = json.dumps(answer, separators=(",", ":")).encode() + b"\n"
        headers.append(("Content-Length", str(len(body))))
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        self._observe(endpoint, method, status, time.perf_counter() - started)
        return [] if method == "HEAD" else [body]

    def _watched(self, environ) -> dict:
        if self.access.enforced():  # before the body is read: no key, no parsing
            self.access.require(WRITE, environ.get("HTTP_AUTHORIZATION"), environ.get("HTTP_X_API_KEY"))
        body = self._json_object(environ)
        for field in ("user_id", "content_id"):
            if field not in body:
                raise InvalidInput(f"the field {field!r} is required", error="missing_field")
        if "event_id" in body and body["event_id"] is None:  # optional means left out, not null
            raise InvalidInput("event_id must be a string when given; leave it out for none, not null",
                               error="invalid_event_id")
        return self.service.record_watch(body["user_id"], body["content_id"], event_id=body.get("event_id"),
                                         k=_k(environ))

    def _json_object(self, environ) -> dict:
        """The body as a JSON object, or a 4xx naming what is wrong with it."""
        content_type = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise UnsupportedMediaType(f"Content-Type must be application/json, got {content_type or 'none'!r}")
        length = environ.get("CONTENT_LENGTH") or ""
        declared = int(length) if length.isdigit() else None
        if declared is not None and declared > self.max_body_bytes:
            raise PayloadTooLarge(f"request bodies are limited to {self.max_body_bytes} bytes")
        # Without a length (chunked), read one byte past the limit to know it was crossed.
        raw = environ["wsgi.input"].read(declared if declared is not None else self.max_body_bytes + 1)
        if len(raw) > self.max_body_bytes:
            raise PayloadTooLarge(f"request bodies are limited to {self.max_body_bytes} bytes")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as problem:
            raise InvalidInput(f"the body is not valid JSON: {problem}", error="malformed_json") from None
        if not isinstance(body, dict):
            raise InvalidInput(f"the body must be a JSON object, got {type(body).__name__}", error="not_an_object")
        return body

    def _observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, str(status))
        child = self._latency.get(key)
        if child is None:
            child = self._latency[key] = metrics.request_latency.labels(*key)
        child.observe(seconds)


def _k(environ) -> int | None:
    query = environ.get("QUERY_STRING")
    if not query:
        return None
    values = parse_qs(query, keep_blank_values=True).get("k")
    return parse_k(values[-1] if values else None)
