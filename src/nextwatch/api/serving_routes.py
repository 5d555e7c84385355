"""POST /watched and GET /recommend/<user_id>: the two routes on every request's hot path, as
plain WSGI in front of Flask. Every other path goes on to the Flask app.

Why not Flask routes: under load Flask's request context, routing, dispatch and response
objects cost about 120 us per GET and 200-270 us per POST, more than the service and Redis
together (bench/README.md, `bench/app_cost.py`). These routes are still one implementation
each: inputs are checked by ``inputs.py`` and errors written by ``responses.py``, as for the
Flask routes.

This is also where requests are refused that the HTTP server would have refused itself under
gunicorn: a request line over MAX_REQUEST_LINE bytes (414) and headers over MAX_HEADER_BYTES
(431), in the API's JSON error shape, whatever the path.

POST /watched needs an API key once keys are configured (service/access.py); while none is,
the check is one in-memory test and no header is read. GET /recommend is open.
"""

from __future__ import annotations

import logging
import time
from http import HTTPStatus

from ..errors import NextwatchError
from ..service import Services
from ..service.access import WRITE
from ..service.recommendations import NO_FILTERS
from . import inputs
from .responses import LatencyObserver, error_answer, json_bytes

log = logging.getLogger("nextwatch.api")

WATCHED = "/watched"
IMPRESSIONS = "/impressions"
RECOMMEND = "/recommend/<user_id>"
# (OpenAPI path, method) of every route served here, for the OpenAPI check.
ROUTES = [("/watched", "post"), ("/impressions", "post"), ("/recommend/{user_id}", "get")]
MAX_REQUEST_LINE = 8190  # bytes of the request target: ids and query strings are far shorter
MAX_HEADER_BYTES = 16 * 1024  # names and values of all headers together
_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


class ServingRoutes:
    def __init__(self, flask_app, services: Services, latency: LatencyObserver):
        self.flask_app = flask_app
        self.recommendations = services.recommendations
        self.access = services.access
        self.latency = latency
        self._not_headers: frozenset[str] | None = None  # learned from the first request (_refusal)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        not_headers = self._not_headers
        if not_headers is None:
            not_headers = self._not_headers = frozenset(name for name in environ if not name.startswith("HTTP_"))
        refusal = _refusal(environ, path, not_headers)
        if refusal is not None:
            return self._respond(start_response, method, *refusal, [])
        if path == "/watched":
            endpoint, allowed = WATCHED, ("POST",)
        elif path == "/impressions":
            endpoint, allowed = IMPRESSIONS, ("POST",)
        elif path.startswith("/recommend/") and path.count("/") == 2 and len(path) > len("/recommend/"):
            endpoint, allowed = RECOMMEND, ("GET", "HEAD")
        else:
            return self.flask_app(environ, start_response)

        started = time.perf_counter()
        headers = []
        try:
            if method not in allowed:
                status, answer = 405, {"error": "method_not_allowed",
                                       "detail": f"{path} accepts {', '.join(allowed)}, not {method}"}
                headers.append(("Allow", ", ".join(allowed)))
            elif endpoint == WATCHED:
                status, answer = 200, self._watched(environ)
            elif endpoint == IMPRESSIONS:
                status, answer = 200, self._impressions(environ)
            else:
                user_id = inputs.user_id(path[len("/recommend/"):])
                k, filters, explain = self._query(environ)
                status, answer = 200, self.recommendations.recommend(user_id, k=k, filters=filters, explain=explain)
        except Exception as error:  # noqa: BLE001 - every error is answered in JSON
            if not isinstance(error, NextwatchError):
                log.exception("unhandled error on %s %s", method, path)
            status, answer, extra = error_answer(error)
            headers.extend(extra.items())
        response = self._respond(start_response, method, status, answer, headers)
        self.latency.observe(endpoint, method, status, started)
        return response

    def _watched(self, environ) -> dict:
        if self.access.enforced():  # before the body is read: no key, no parsing
            self.access.require(WRITE, environ.get("HTTP_AUTHORIZATION"), environ.get("HTTP_X_API_KEY"))
        body = inputs.json_object(environ.get("CONTENT_TYPE"), environ.get("CONTENT_LENGTH"),
                                  environ["wsgi.input"].read)
        user_id, content_id, event_id = inputs.watch(body)
        k, filters, explain = self._query(environ)
        return self.recommendations.record_watch(user_id, content_id, event_id=event_id, k=k, filters=filters,
                                                 explain=explain)

    def _query(self, environ):
        """``k``, the filters and ``explain`` of the query string (none: the defaults)."""
        query = environ.get("QUERY_STRING")
        if not query:
            return None, NO_FILTERS, False
        values = inputs.query_values(query)
        k = inputs.parse_k(values.get("k")) if "k" in values else None
        filters = NO_FILTERS
        if any(name in values for name in inputs.FILTER_PARAMETERS):
            filters = inputs.filters(values)
        return k, filters, inputs.flag(values.get("explain"), "explain")

    def _impressions(self, environ) -> dict:
        if self.access.enforced():  # the same role as a watch: a client reporting what it showed
            self.access.require(WRITE, environ.get("HTTP_AUTHORIZATION"), environ.get("HTTP_X_API_KEY"))
        body = inputs.json_object(environ.get("CONTENT_TYPE"), environ.get("CONTENT_LENGTH"),
                                  environ["wsgi.input"].read)
        user_id, content_ids, event_id = inputs.impressions(body)
        return self.recommendations.record_impressions(user_id, content_ids, event_id=event_id)

    @staticmethod
    def _respond(start_response, method: str, status: int, answer: dict, headers: list):
        body = json_bytes(answer)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers]
        start_response(_STATUS_LINES[status], headers)
        return [] if method == "HEAD" else [body]


def _refusal(environ, path: str, not_headers: frozenset[str]) -> tuple[int, dict] | None:
    """What the server would refuse before routing: (status, body), else None.

    Headers are the environ's HTTP_ keys. granian's environ also holds a copy of the process
    environment (about 100 keys here, where the settings travel), so instead of testing every
    key in Python, the set difference with ``not_headers`` (keys of an earlier request that are
    not headers) leaves the handful worth testing, in C: 2 against 7 us a request (timeit, 87
    keys). No HTTP_ key is ever in ``not_headers``, so every header is still counted."""
    target = len(path) + len(environ.get("QUERY_STRING", ""))
    if target > MAX_REQUEST_LINE:
        return 414, {"error": "request_line_too_long",
                     "detail": f"the request target is limited to {MAX_REQUEST_LINE} bytes"}
    size = 0
    for name in environ.keys() - not_headers:
        if name.startswith("HTTP_"):
            size += len(name) + len(environ[name])
    if size > MAX_HEADER_BYTES:
        return 431, {"error": "headers_too_large",
                     "detail": f"request headers are limited to {MAX_HEADER_BYTES} bytes in all"}
    return None


