"""The Flask side of the one JSON error shape {"error": ..., "detail": ...} (responses.py)."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from ..errors import NextwatchError
from .responses import error_answer, http_error_answer

log = logging.getLogger("nextwatch.api")

_HTTP_ERROR_NAMES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def _json(status: int, body: dict, headers: dict):
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers)
    return response


def register(app: Flask) -> None:
    @app.errorhandler(NextwatchError)
    def nextwatch_error(error: NextwatchError):
        return _json(*error_answer(error))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        name = _HTTP_ERROR_NAMES.get(error.code, error.name.lower().replace(" ", "_"))
        detail = error.description
        if error.code == 413:
            detail = f"request bodies are limited to {app.config['MAX_CONTENT_LENGTH']} bytes"
        headers = {"Allow": ", ".join(error.valid_methods or [])} if error.code == 405 else {}
        return _json(error.code, http_error_answer(name, detail), headers)

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("unhandled error")
        return _json(*error_answer(error))
