"""One place that turns every error into a JSON body {"error": ..., "detail": ...}."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from ..errors import NextwatchError

log = logging.getLogger("nextwatch.api")

_HTTP_ERROR_NAMES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def register(app: Flask) -> None:
    @app.errorhandler(NextwatchError)
    def nextwatch_error(error: NextwatchError):
        response = jsonify(error.to_json())
        response.status_code = error.status
        response.headers.update(error.headers)
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        name = _HTTP_ERROR_NAMES.get(error.code, error.name.lower().replace(" ", "_"))
        detail = error.description
        if error.code == 413:
            detail = f"request bodies are limited to {app.config['MAX_CONTENT_LENGTH']} bytes"
        response = jsonify({"error": name, "detail": detail})
        response.status_code = error.code
        if error.code == 405:
            response.headers["Allow"] = ", ".join(error.valid_methods or [])
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("unhandled error")
        response = jsonify({"error": "internal_error", "detail": "an unexpected error happened; see the server log"})
        response.status_code = 500
        return response
