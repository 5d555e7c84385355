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


class EventInFlight(NextwatchError):
    """The same event_id is being recorded by a concurrent request; the client retries."""

    status = 409
    error = "event_in_flight"


class NotFound(NextwatchError):
    status = 404
    error = "not_found"


class Conflict(NextwatchError):
    status = 409
    error = "conflict"


class Unauthorized(NextwatchError):
    """No API key, or one that is not (or no longer) valid. The detail never repeats the key."""

    status = 401
    error = "missing_api_key"

    def __init__(self, detail: str, *, error: str = "missing_api_key"):
        challenge = 'Bearer realm="nextwatch"'
        if error == "invalid_api_key":
            challenge += ', error="invalid_token"'  # RFC 6750 section 3
        super().__init__(detail, error=error, headers={"WWW-Authenticate": challenge})


class Forbidden(NextwatchError):
    """A valid key whose role does not allow this route."""

    status = 403
    error = "forbidden"


class RateLimited(NextwatchError):
    status = 429
    error = "rate_limited"

    def __init__(self, detail: str, retry_after_seconds: int):
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after_seconds))})


class StoreUnavailable(NextwatchError):
    """Redis cannot be reached; the client should retry later."""

    status = 503
    error = "store_unavailable"

    def __init__(self, detail: str, retry_after_seconds: int = 2):
        super().__init__(detail, headers={"Retry-After": str(retry_after_seconds)})


class ReplicasBehind(StoreUnavailable):
    """The watch is recorded on the master, but fewer replicas than required confirmed it in
    time (NEXTWATCH_WRITE_REPLICAS): not yet safe from a master failure. A retry with the same
    event_id is answered once the replicas hold it."""

    error = "replicas_behind"


class StoreOutOfMemory(StoreUnavailable):
    """Redis refused a write because it reached ``maxmemory`` with nothing left to evict (only
    keys with a TTL are evictable). Reads still work; an operator has to free or add memory."""

    error = "store_out_of_memory"

    def __init__(self, detail: str, retry_after_seconds: int = 10):
        super().__init__(detail, retry_after_seconds)
