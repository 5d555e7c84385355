"""Every check of what a client sends, in one place: the API validates, the service trusts.

Each check raises InvalidInput (or another 4xx NextwatchError) whose message states the rule
that was broken; nothing is written before every check has passed.
"""

from __future__ import annotations

import json
from typing import Mapping

from ..errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from ..ids import validate_id
from ..service.catalog import DEFAULT_LIMIT, MAX_GENRE_LENGTH, MAX_IDS, MAX_LIMIT, MAX_PAGE, MAX_TEXT_LENGTH, TitleQuery

MAX_K = 100
MAX_BODY_BYTES = 64 * 1024


def whole_number(raw: str | None, name: str, low: int, high: int, default: int | None) -> int | None:
    """``raw`` as a whole number in [low, high]; ``default`` when it is absent."""
    if raw is None:
        return default
    # isascii: str.isdigit() also accepts digits such as '²' that int() refuses; the length cap
    # keeps int() away from huge inputs.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(high)) and low <= int(raw) <= high):
        raise InvalidInput(f"{name} must be a whole number from {low} to {high}, got {raw[:20]!r}",
                           error=f"invalid_{name}")
    return int(raw)


def parse_k(raw: str | None) -> int | None:
    """``?k=``: how many titles to list (1-100), None when absent."""
    return whole_number(raw, "k", 1, MAX_K, None)


def user_id(raw) -> str:
    return validate_id(raw, "user_id")


def content_id(raw) -> str:
    return validate_id(raw, "content_id")


def json_object(content_type: str | None, declared_length: str | None, read, max_bytes: int = MAX_BODY_BYTES) -> dict:
    """A request body that must be a JSON object: ``read(n)`` reads at most n bytes of it."""
    content_type = (content_type or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {content_type or 'none'!r}")
    length = declared_length or ""
    declared = int(length) if length.isdigit() else None
    if declared is not None and declared > max_bytes:
        raise PayloadTooLarge(f"request bodies are limited to {max_bytes} bytes")
    # Without a length (chunked), read one byte past the limit to know it was crossed.
    raw = read(declared if declared is not None else max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request bodies are limited to {max_bytes} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as problem:
        raise InvalidInput(f"the body is not valid JSON: {problem}", error="malformed_json") from None
    if not isinstance(body, dict):
        raise InvalidInput(f"the body must be a JSON object, got {type(body).__name__}", error="not_an_object")
    return body


def watch(body: dict) -> tuple[str, str, str | None]:
    """(user_id, content_id, event_id or None) of a POST /watched body."""
    for field in ("user_id", "content_id"):
        if field not in body:
            raise InvalidInput(f"the field {field!r} is required", error="missing_field")
    event_id = body.get("event_id")
    if "event_id" in body and event_id is None:  # optional means left out, not null
        raise InvalidInput("event_id must be a string when given; leave it out for none, not null",
                           error="invalid_event_id")
    return (user_id(body["user_id"]), content_id(body["content_id"]),
            validate_id(event_id, "event_id") if event_id is not None else None)


MAX_IMPRESSIONS_PER_REQUEST = 100


def impressions(body: dict) -> tuple[str, list[str], str | None]:
    """(user_id, content ids in the order shown without repeats, event_id or None) of a POST
    /impressions body."""
    for field in ("user_id", "content_ids"):
        if field not in body:
            raise InvalidInput(f"the field {field!r} is required", error="missing_field")
    shown = body["content_ids"]
    if not isinstance(shown, list) or not 1 <= len(shown) <= MAX_IMPRESSIONS_PER_REQUEST:
        raise InvalidInput(f"content_ids must be a list of 1 to {MAX_IMPRESSIONS_PER_REQUEST} title ids",
                           error="invalid_content_ids")
    event_id = body.get("event_id")
    if "event_id" in body and event_id is None:
        raise InvalidInput("event_id must be a string when given; leave it out for none, not null",
                           error="invalid_event_id")
    return (user_id(body["user_id"]), list(dict.fromkeys(content_id(c) for c in shown)),
            validate_id(event_id, "event_id") if event_id is not None else None)


def title_query(args: Mapping[str, str]) -> TitleQuery:
    """GET /titles' query string; InvalidInput names the rule a value broke."""
    ids = args.get("ids")
    if ids is not None:
        # Not checked against the id rules: a text that is no id is simply not in the
        # catalog, and importers may have stored ids that POST /watched would refuse.
        parts = ids.split(",")
        if len(parts) > MAX_IDS:
            raise InvalidInput(f"ids may list at most {MAX_IDS} titles, got {len(parts)}", error="invalid_ids")
        ids = tuple(dict.fromkeys(part.strip() for part in parts if part.strip()))
    return TitleQuery(
        page=whole_number(args.get("page"), "page", 1, MAX_PAGE, 1),
        limit=whole_number(args.get("limit"), "limit", 1, MAX_LIMIT, DEFAULT_LIMIT),
        text=_search_text(args.get("q"), "q", MAX_TEXT_LENGTH),
        genre=_search_text(args.get("genre"), "genre", MAX_GENRE_LENGTH),
        ids=ids,
    )


def _search_text(raw: str | None, name: str, max_length: int) -> str:
    raw = raw or ""
    if len(raw) > max_length:  # before stripping: the documented bound is on what was sent
        raise InvalidInput(f"{name} must be at most {max_length} characters, got {len(raw)}", error=f"invalid_{name}")
    return raw.strip().casefold()


def model_version(raw: str) -> int:
    """A model version in a path: any whole number from 1 (one that was never published is a
    404 later, not a 400 here, however large)."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 4000 or int(raw) < 1:
        raise InvalidInput(f"version must be a whole number from 1, got {raw[:20]!r}", error="invalid_version")
    return int(raw)
