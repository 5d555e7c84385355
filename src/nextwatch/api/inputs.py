"""Every check of what a client sends, in one place: the API validates, the service trusts.

Each check raises InvalidInput (or another 4xx NextwatchError) whose message states the rule
that was broken; nothing is written before every check has passed.
"""

from __future__ import annotations

import json
import re
from typing import Mapping
from urllib.parse import unquote_plus

from ..errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from ..ids import validate_id
from ..service.catalog import DEFAULT_LIMIT, MAX_GENRE_LENGTH, MAX_IDS, MAX_LIMIT, MAX_PAGE, MAX_TEXT_LENGTH, TitleQuery
from ..service.title_facets import Filters

MAX_K = 100
_ID_CHARACTERS = re.compile(r"[A-Za-z0-9_.:\-]+")
# A genre filter is printable text with something besides spaces. Only the space is trimmed: the
# OpenAPI schema says the same with an explicit class, because regex dialects disagree on which
# characters \s means (Python's counts \x1c-\x1f as spaces, ECMAScript's does not).
GENRE_PATTERN = r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$"
_GENRE = re.compile(GENRE_PATTERN)
_REGION = re.compile(r"[A-Za-z]{2}")  # the document's rule, read before upper() ('ß'.upper() is 'SS')
MAX_BODY_BYTES = 64 * 1024
# PUT /admin/rules: 10,000 blocked and 10,000 boosted ids of up to 128 characters fit.
MAX_RULES_BODY_BYTES = 4 * 1024 * 1024


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


def query_values(query: str) -> dict[str, str]:
    """The last value of each name of a query string, decoded as ``urllib.parse.parse_qs(query,
    keep_blank_values=True)`` decodes them (tests/test_properties.py checks that they agree).
    Written out because a filtered cache hit parses one on every request: 1.5 against 8 us for
    ``k=3&max_maturity=18`` (timeit); only fields with ``%`` or ``+`` need decoding."""
    values = {}
    for field in query.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "%" in field or "+" in field:
            name, value = unquote_plus(name), unquote_plus(value)
        values[name] = value
    return values


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
MAX_EXCLUDED = 100
MAX_MATURITY = 21
FILTER_PARAMETERS = ("genre", "exclude", "max_maturity", "region")
MAX_EXCLUDE_CHARACTERS = 4000  # MAX_EXCLUDED ids of ordinary length and their commas


def filters(values: Mapping[str, str]) -> Filters:
    """The filters of a query string (``genre``, ``exclude``, ``max_maturity``, ``region``). A
    genre no title has is a filter nothing passes (the catalog allows no title), as an unknown
    id in ``exclude`` excludes nothing: well-formed values are never refused."""
    genre = values.get("genre")
    if genre is not None:
        if len(genre) > MAX_GENRE_LENGTH or not _GENRE.fullmatch(genre):  # fullmatch: Python's $ passes a final \n
            raise InvalidInput(f"genre must be 1-{MAX_GENRE_LENGTH} printable characters, not only spaces",
                               error="invalid_genre")
        genre = genre.strip(" ").casefold()
    excluded: tuple[str, ...] = ()
    if values.get("exclude") is not None:
        if len(values["exclude"]) > MAX_EXCLUDE_CHARACTERS:
            raise InvalidInput(f"exclude is at most {MAX_EXCLUDE_CHARACTERS} characters", error="invalid_exclude")
        # Only spaces around an id are dropped, as the document's pattern allows; any other
        # whitespace makes the part no id and is refused.
        parts = [part.strip(" ") for part in values["exclude"].split(",") if part.strip(" ")]
        if len(parts) > MAX_EXCLUDED:
            raise InvalidInput(f"exclude lists at most {MAX_EXCLUDED} title ids, got {len(parts)}",
                               error="invalid_exclude")
        for part in parts:  # a part too long to be an id excludes nothing, like an id no title has
            if not _ID_CHARACTERS.fullmatch(part):
                raise InvalidInput(f"exclude lists title ids separated by commas; {part[:40]!r} is not one",
                                   error="invalid_exclude")
        excluded = tuple(dict.fromkeys(parts))
    maturity = whole_number(values.get("max_maturity"), "max_maturity", 0, MAX_MATURITY, None)
    region = values.get("region")
    if region is not None:
        if not _REGION.fullmatch(region):  # as sent: two letters and nothing else, no stripping
            raise InvalidInput(f"region must be an ISO 3166 alpha-2 code such as US or FR, got {region[:20]!r}",
                               error="invalid_region")
        region = region.upper()
    return Filters(genre or None, excluded, maturity, region)


def flag(raw: str | None, name: str) -> bool:
    """``?explain=true``: true/false (also 1/0); absent is false. Exactly the document's four
    values: no other case, no spaces."""
    if raw is None:
        return False
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise InvalidInput(f"{name} must be true or false, got {raw[:20]!r}", error=f"invalid_{name}")


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
