"""Title metadata files (``nextwatch import --titles FILE``, formats ``csv`` and ``jsonl``): what
a streaming catalog knows of a title beyond its name, and what filters, rules and cold-start
neighbours read.

One title per row (CSV with a header) or per line (JSON Lines). Fields, only ``content_id``
required:

- ``content_id``: the id (the rules of ``ids.py``);
- ``name``; ``genres`` (a JSON list, or ``|``-separated in CSV); ``year`` (1800-2100);
- ``maturity``: the youngest age the title is for, 0-21 (0: everyone; 13, 16, 18 ...); a
  request's ``max_maturity`` keeps titles at or below it;
- ``available_from``, ``available_until``: ISO 8601 dates or times (``2026-12-01``,
  ``2026-12-01T20:00:00Z``; no zone means UTC) or unix seconds; outside the window a title is
  never recommended; ``until`` is exclusive;
- ``regions``: ISO 3166 alpha-2 codes where the title may be shown (a JSON list, or
  ``|``-separated in CSV); none: everywhere;
- ``series``, ``season``, ``episode``: a title that is an episode (all three together);
- ``kind``: ``film`` or ``episode`` (optional, shown only).

Every bad row is reported with its line number and the rule it broke; the command then stores
nothing (a catalog is never half-imported). Titles are stored normalised: the window as unix
seconds, regions upper case, genres de-duplicated.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import re

from ..ids import MAX_ID_LENGTH
from .lines import NumberedLines, Problems
from .readers import MAX_PROBLEMS
from .title_readers import TitlesResult

METADATA_FORMATS = ("csv", "jsonl")
MAX_MATURITY = 21
_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,%d}" % MAX_ID_LENGTH)
_REGION = re.compile(r"[A-Z]{2}")
_TEXT_FIELDS = ("name", "series", "kind")
KNOWN_FIELDS = ("content_id", "name", "genres", "year", "maturity", "available_from", "available_until",
                "regions", "series", "season", "episode", "kind")


class BadTitle(ValueError):
    """A row that breaks a rule; the message states the rule."""


def read_title_metadata(path: str | os.PathLike, fmt: str, max_problems: int = MAX_PROBLEMS) -> TitlesResult:
    if fmt not in METADATA_FORMATS:
        raise ValueError(f"title metadata format must be one of {', '.join(METADATA_FORMATS)}, got {fmt!r}")
    problems = Problems(max_problems)
    titles: list[dict] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        lines = NumberedLines(f)
        for raw in (_csv_rows(lines, path) if fmt == "csv" else _json_rows(lines)):
            try:
                if isinstance(raw, BadTitle):
                    raise raw
                title = normalised_title(raw)
                if title["content_id"] in seen:
                    raise BadTitle(f"content_id {title['content_id']!r} was already given on line "
                                   f"{seen[title['content_id']]}")
            except BadTitle as problem:
                problems.add(lines.number, str(problem))
                continue
            seen[title["content_id"]] = lines.number
            titles.append(title)
    return TitlesResult(titles, problems.kept, problems.count)


def _csv_rows(lines: NumberedLines, path):
    rows = csv.DictReader(lines)
    if rows.fieldnames is None or "content_id" not in rows.fieldnames:
        raise ValueError(f"{path}: a CSV title file starts with a header naming content_id and any of "
                         f"{', '.join(KNOWN_FIELDS[1:])}")
    for row in rows:
        if None in row:  # more fields than the header names
            yield BadTitle(f"more fields than the header's {len(rows.fieldnames)}")
            continue
        values = {k: v for k, v in row.items() if v not in (None, "")}
        for field in ("genres", "regions"):
            if field in values:
                values[field] = [part for part in values[field].split("|") if part]
        yield values


def _json_rows(lines: NumberedLines):
    for line in lines:
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as problem:
            yield BadTitle(f"not valid JSON: {problem}")
            continue
        yield value if isinstance(value, dict) else BadTitle("each line must be a JSON object")


def normalised_title(raw: dict) -> dict:
    """The stored form of one title's metadata; BadTitle names the first rule broken."""
    unknown = sorted(set(raw) - set(KNOWN_FIELDS))
    if unknown:
        raise BadTitle(f"unknown field {unknown[0]!r} (known: {', '.join(KNOWN_FIELDS)})")
    content_id = raw.get("content_id")
    if not isinstance(content_id, str) or not _ID.fullmatch(content_id):
        raise BadTitle(f"content_id must be 1-{MAX_ID_LENGTH} characters from [A-Za-z0-9_.:-]")
    title: dict = {"content_id": content_id}
    for field in _TEXT_FIELDS:
        if field in raw:
            if not isinstance(raw[field], str) or not raw[field].strip():
                raise BadTitle(f"{field} must be a non-empty text")
            title[field] = raw[field].strip()
    if "kind" in title and title["kind"] not in ("film", "episode"):
        raise BadTitle("kind must be film or episode")
    if "genres" in raw:
        genres = raw["genres"]
        if not isinstance(genres, list) or not all(isinstance(g, str) and g.strip() for g in genres):
            raise BadTitle("genres must be a list of non-empty texts")
        title["genres"] = list(dict.fromkeys(g.strip() for g in genres))
    for field, low, high in (("year", 1800, 2100), ("maturity", 0, MAX_MATURITY), ("season", 0, 10_000),
                             ("episode", 0, 100_000)):
        if field in raw:
            title[field] = _whole(raw[field], field, low, high)
    series_fields = [field for field in ("series", "season", "episode") if field in title]
    if series_fields and len(series_fields) != 3:
        raise BadTitle("an episode gives series, season and episode together")
    for field in ("available_from", "available_until"):
        if field in raw:
            title[field] = _moment(raw[field], field)
    if "available_from" in title and "available_until" in title and title["available_until"] <= title["available_from"]:
        raise BadTitle("available_until must come after available_from")
    if "regions" in raw:
        regions = raw["regions"]
        if not isinstance(regions, list) or not regions:
            raise BadTitle("regions must be a non-empty list of ISO 3166 alpha-2 codes (leave it out for everywhere)")
        upper = [r.strip().upper() if isinstance(r, str) else r for r in regions]
        if not all(isinstance(r, str) and _REGION.fullmatch(r) for r in upper):
            raise BadTitle("regions must be ISO 3166 alpha-2 codes such as US, FR, DE")
        title["regions"] = sorted(set(upper))
    return title


def _whole(value, field: str, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadTitle(f"{field} must be a whole number from {low} to {high}")
    return value


def _moment(value, field: str) -> float:
    """Unix seconds from unix seconds or an ISO 8601 date or time (UTC when no zone is given)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise BadTitle(f"{field} must be an ISO 8601 date or time (2026-12-01, 2026-12-01T20:00:00Z) "
                               "or unix seconds") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=datetime.timezone.utc)
            seconds = moment.timestamp()
    else:
        raise BadTitle(f"{field} must be an ISO 8601 date or time or unix seconds")
    if not 0 <= seconds < 4_102_444_800:  # 1970 to 2100
        raise BadTitle(f"{field} must be between 1970 and 2100")
    return seconds
