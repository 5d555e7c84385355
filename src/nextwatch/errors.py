"""Errors that carry their HTTP status; the API turns any of them into a JSON body.

No Flask import here: the service raises these and the API maps them in one handler.
"""

from __future__ import annotations


class NextwatchError(Exception):
    status = 500
    error = "internal_error"

    def __init__(self, detail: str, *, error: str | None = None, headers: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        if error:
            self.error = error
        self.headers = headers or {}

    def to_json(self) -> dict:
        return {"error": self.error, "detail": self.detail}


class InvalidInput(NextwatchError):
    status = 400
    error = "invalid_input"


class UnsupportedMediaType(NextwatchError):
    status = 415
    error = "unsupported_media_type"


class PayloadTooLarge(NextwatchError):
    status = 413
    error = "body_too_large"


class NotFound(NextwatchError):
    status = 404
    error = "not_found"


class StoreUnavailable(NextwatchError):
    """Redis cannot be reached; the client should retry later."""

    status = 503
    error = "store_unavailable"

    def __init__(self, detail: str, retry_after_seconds: int = 2):
        super().__init__(detail, headers={"Retry-After": str(retry_after_seconds)})
