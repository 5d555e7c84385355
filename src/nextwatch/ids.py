"""Validation of the ids that come from clients, before they reach key names or the event log."""

from __future__ import annotations

import re

from .errors import InvalidInput

MAX_ID_LENGTH = 128
ID_CHARACTERS = "[A-Za-z0-9_.:-]"
_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")


def validate_id(value: object, field: str) -> str:
    """Return ``value`` if it is a usable id, else raise InvalidInput naming the rule broken."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string, got {type(value).__name__}", error=f"invalid_{field}")
    if not value:
        raise InvalidInput(f"{field} must not be empty", error=f"invalid_{field}")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInput(
            f"{field} must be at most {MAX_ID_LENGTH} characters, got {len(value)}", error=f"invalid_{field}"
        )
    if not _ID_PATTERN.fullmatch(value):
        raise InvalidInput(
            f"{field} may only contain characters from {ID_CHARACTERS}", error=f"invalid_{field}"
        )
    return value
