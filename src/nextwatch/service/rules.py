"""A deployment's recommendation rules: set through the admin API or `nextwatch rules`, stored in
Redis (store/rules.py), held by every serving process and applied the same way on the watch
path, on a cache miss and in `nextwatch evaluate --rules FILE`.

- ``blocklist``: titles never recommended;
- ``boosts``: title -> weight, in standard deviations of each user's scores (model/adjustments.py):
  1 lifts a title by one spread of the user's scores, -1 lowers it as much; for new releases or
  promoted titles;
- ``continue_watching``: the next episode of the series the user watched last goes first.

The rules' version is part of every cached prediction's stamp: changing them invalidates the
cached predictions, as a new model version does.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Callable
import time

import numpy as np

from ..errors import Conflict, InvalidInput, StoreUnavailable
from ..ids import validate_id
from ..store import Store

MAX_LISTED = 10_000  # titles in the blocklist, and boosted titles
MAX_BOOST = 10.0
REFRESH_SECONDS = 2.0  # how soon a worker applies rules changed elsewhere


@dataclasses.dataclass(frozen=True)
class Rules:
    version: int = 0
    blocklist: frozenset[str] = frozenset()
    boosts: tuple[tuple[str, float], ...] = ()
    continue_watching: bool = False

    @classmethod
    def parse(cls, document, version: int | None = None) -> "Rules":
        """Rules from a JSON document; InvalidInput names the field and the rule it broke."""
        if not isinstance(document, dict):
            raise InvalidInput("rules are a JSON object", error="invalid_rules")
        unknown = sorted(set(document) - {"version", "blocklist", "boosts", "continue_watching"})
        if unknown:
            raise InvalidInput(f"unknown rule {unknown[0]!r} (rules: blocklist, boosts, continue_watching)",
                               error="invalid_rules")
        blocked = document.get("blocklist", [])
        if not isinstance(blocked, list) or len(blocked) > MAX_LISTED:
            raise InvalidInput(f"blocklist is a list of at most {MAX_LISTED} title ids", error="invalid_blocklist")
        listed = document.get("boosts", [])
        if not isinstance(listed, list) or len(listed) > MAX_LISTED:
            raise InvalidInput(f"boosts is a list of at most {MAX_LISTED} objects {{content_id, weight}}",
                               error="invalid_boosts")
        boosts = {}
        for boost in listed:
            if not isinstance(boost, dict) or set(boost) != {"content_id", "weight"}:
                raise InvalidInput("each boost is an object with exactly content_id and weight", error="invalid_boosts")
            weight = boost["weight"]
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                    or abs(weight) > MAX_BOOST:
                raise InvalidInput(f"a boost's weight is a number from {-MAX_BOOST:g} to {MAX_BOOST:g} (standard "
                                   "deviations of a user's scores)", error="invalid_boosts")
            boosts[validate_id(boost["content_id"], "content_id")] = float(weight)  # the last of a repeated id wins
        continue_watching = document.get("continue_watching", False)
        if not isinstance(continue_watching, bool):
            raise InvalidInput("continue_watching is true or false", error="invalid_rules")
        stored_version = version if version is not None else document.get("version", 0)
        if isinstance(stored_version, bool) or not isinstance(stored_version, int) or stored_version < 0:
            raise InvalidInput("version is the stored rules' version, a whole number from 0", error="invalid_rules")
        return cls(int(stored_version or 0), frozenset(validate_id(t, "content_id") for t in blocked),
                   tuple(sorted(boosts.items())),
                   continue_watching)

    def to_json(self) -> dict:
        return {"version": self.version, "blocklist": sorted(self.blocklist),
                "boosts": [{"content_id": title, "weight": weight} for title, weight in self.boosts],
                "continue_watching": self.continue_watching}

    def blocked_codes(self, code_of: Callable[[str], int | None]) -> list[int]:
        """The blocklist as title codes (``code_of``: content id -> code, None if unknown)."""
        return [code for code in map(code_of, self.blocklist) if code is not None]

    def boost_codes(self, code_of: Callable[[str], int | None]) -> tuple[np.ndarray, np.ndarray] | None:
        """(codes, weights) of the boosts, for ``model.adjustments.Adjustments``; a title
        ``code_of`` does not know gets a code past every catalog, so it boosts nothing."""
        if not self.boosts:
            return None
        codes = [code_of(content_id) for content_id, _ in self.boosts]
        return (np.array([c if c is not None else np.iinfo(np.int64).max for c in codes], dtype=np.int64),
                np.array([weight for _, weight in self.boosts], dtype=np.float64))


class RuleBook:
    """The rules this process applies, re-read at most every ``refresh_seconds``."""

    def __init__(self, store: Store, refresh_seconds: float = REFRESH_SECONDS, clock=time.monotonic):
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self._rules = Rules()
        self._read_at = -math.inf
        self._lock = threading.Lock()

    def current(self) -> Rules:
        if self.clock() - self._read_at >= self.refresh_seconds and self._lock.acquire(blocking=False):
            try:
                try:
                    self._rules = Rules.parse(self.store.rules.read())
                except StoreUnavailable:
                    pass  # keep the rules known; serving goes on
                self._read_at = self.clock()
            finally:
                self._lock.release()
        return self._rules

    def replace(self, document: dict) -> Rules:
        """Store new rules; the document's ``version`` must be the stored one (409 otherwise)."""
        rules = Rules.parse(document)
        done, version = self.store.rules.replace({k: v for k, v in rules.to_json().items() if k != "version"},
                                                 rules.version)
        if not done:
            raise Conflict(f"the rules changed meanwhile (version {version}, not {rules.version}): read them again",
                           error="rules_changed")
        self._read_at = -math.inf
        return dataclasses.replace(rules, version=version)

    def stored(self) -> Rules:
        return Rules.parse(self.store.rules.read())
