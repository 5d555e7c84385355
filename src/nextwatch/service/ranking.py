"""From a user's history to a ranked list of titles: the model (or the fallback chain), the
deployment's rules, the request's filters, what is available, demoted titles, a slot for a new
title, and the reason for each title.

Two rankings are made from the same steps:

- the **cacheable** one: the model's ranking under the rules and the availability of the
  moment, deep enough to be cached (NEXTWATCH_CACHE_TOP_K titles);
- the **answer**: that ranking with the request's filters and the user's demoted titles
  taken out. When it is still long enough it is the answer (a filtered request served from the
  cached list costs a filter of a few codes); when it is not, the ranking is made again with
  the filters inside, so ``k`` titles come back whenever the catalog allows.

Both are the top of one order (scores adjusted as ``model/adjustments.py`` says), so a cached
list filtered is the same as a filtered ranking as far as it reaches.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import numpy as np

from ..model import NextTitleModel
from ..model.adjustments import Adjustments
from .rules import Rules
from .title_facets import Filters
from .titles import CatalogCodes

NEW_TITLE_SLOT = 2  # a new title, when one suits the user, is shown third
NEW_TITLE_MIN_SIMILARITY = 0.5
NEW_TITLE_HISTORY = 10  # recent titles a new title is compared with
MAX_FILTER_MASKS = 64  # combinations of filters whose masks are kept (Ranker._filtered)
CONFIG_TABLE, CONFIG_POPULAR, CONFIG_CURRENT = "table", "popular", "current"


@dataclasses.dataclass(frozen=True)
class Variant:
    """What serves a user: a model version, a configuration (experiments: ``table`` leaves the
    sequence network out, ``popular`` serves popular titles only) and the rules' version."""

    version: int
    config: str = CONFIG_CURRENT
    rules_version: int = 0
    experiment: str | None = None
    arm: str | None = None

    @functools.cached_property  # once per Variant: a plain one serves many requests (recommendations.py)
    def stamp_key(self) -> int:
        """What a cached prediction's stamp is computed from beside the history: a change of
        model, configuration or rules makes every cached prediction of the old ones invalid."""
        if self.config == CONFIG_CURRENT and self.rules_version == 0:
            return self.version  # the stamps of plain deployments stay as they were
        return zlib.crc32(f"{self.version}/{self.config}/{self.rules_version}".encode())


@functools.lru_cache(maxsize=8)
def plain_variant(version: int, rules_version: int) -> Variant:
    """The variant that serves everyone while no experiment runs: one object per model and rules
    version, so a request does not build one (nor compute its stamp key) each time."""
    return Variant(version, CONFIG_CURRENT, rules_version)


@dataclasses.dataclass(frozen=True)
class Ranking:
    codes: list[int]
    source: str  # model, popular or catalog
    first: int | None = None  # the next episode put first
    new: int | None = None  # the new title given a slot


class Ranker:
    def __init__(self, titles: CatalogCodes):
        self.titles = titles
        self._new_cache: tuple[tuple, np.ndarray] | None = None  # ((model, catalog size), new codes)
        # ((rules, their version, titles known), (blocked codes, boosts)): a blocklist or boosts of
        # thousands of ids are turned into codes once per rules version, not on every request.
        self._rule_cache: tuple[tuple, tuple] | None = None
        # filters -> (the availability mask and facets it was made from, the mask): _filtered.
        self._filter_masks: dict[Filters, tuple] = {}

    def rank(self, model: NextTitleModel | None, variant: Variant, rules: Rules, history: np.ndarray, k: int,
             filters: Filters | None = None, demoted: np.ndarray | None = None) -> Ranking:
        history = np.asarray(history, dtype=np.int64)
        allowed = self._allowed(rules, filters)
        if model is None:
            watched = set(history.tolist())
            codes = [int(c) for c in np.flatnonzero(allowed) if c not in watched][:k]
            return Ranking(codes, "catalog")
        if variant.config == CONFIG_POPULAR or len(history) == 0:
            return Ranking(self._popular(model, allowed, history, demoted, k), "popular")
        first = self._next_episode(rules, history, allowed)
        mask = allowed
        if mask is self.titles.available() and self.titles.all_available:
            mask = None  # nothing filtered out: the model's own (faster) ranking
        boosts = self._rule_codes(rules)[1]
        adjustments = Adjustments(allowed=mask, boost_codes=None if boosts is None else boosts[0],
                                  boost_weights=None if boosts is None else boosts[1], first=first, demoted=demoted)
        codes = model.recommend(history, k, with_sequence=variant.config != CONFIG_TABLE, adjustments=adjustments)
        new = self._new_title(model, history, allowed, codes)
        if new is not None:
            codes = [c for c in codes if c != new]
            codes.insert(min(NEW_TITLE_SLOT, len(codes)), new)
            codes = codes[:k]
        return Ranking(codes, "model", first if first in codes else None, new if new in codes else None)

    def keeps(self, codes, rules: Rules, filters: Filters | None, demoted: np.ndarray | None,
              limit: int | None = None) -> list[int]:
        """``codes`` (a cached ranking) without the titles the request filters out, those no
        longer available, and those demoted for the user; the first ``limit`` of them if given
        (a cache hit for one title usually looks at one code, not all ten)."""
        allowed = self._allowed(rules, filters)
        count = len(allowed)
        out = set(demoted.tolist()) if demoted is not None and len(demoted) else ()
        kept = []
        # Python ints, not NumPy scalars: a cache hit's ten codes checked as scalars cost 3.5x.
        for code in codes.tolist() if isinstance(codes, np.ndarray) else codes:
            if code < count and allowed[code] and code not in out:
                kept.append(code)
                if len(kept) == limit:
                    break
        return kept

    # -- the parts -----------------------------------------------------------------------------
    def _allowed(self, rules: Rules, filters: Filters | None) -> np.ndarray:
        titles = self.titles
        allowed = titles.available()
        if filters is not None and filters.any:
            allowed = self._filtered(filters, allowed)
        if rules.blocklist:
            blocked = self._rule_codes(rules)[0]
            allowed = allowed.copy()
            allowed[blocked[blocked < len(allowed)]] = False
        return allowed

    def _filtered(self, filters: Filters, available: np.ndarray) -> np.ndarray:
        """``available`` narrowed by ``filters``, kept per combination of filters while the
        availability mask and the facets are the same objects: a window that opens or closes,
        and every catalog refresh, make a new availability mask (titles.py). A kids' profile or
        a region asks for the same filters request after request, and a filtered cache hit
        would otherwise build a catalog-sized mask to check a few codes. Filters with
        ``exclude`` are a user's own: made each time, not kept. Callers never write to it."""
        titles = self.titles
        facets = titles.facets
        if filters.exclude:
            return facets.allowed(filters, available, titles.known_code)
        kept = self._filter_masks.get(filters)
        if kept is not None and kept[0] is available and kept[1] is facets:
            return kept[2]
        mask = facets.allowed(filters, available, titles.known_code)
        if len(self._filter_masks) >= MAX_FILTER_MASKS:
            self._filter_masks.clear()  # rare: many distinct filters; starting over is simplest
        self._filter_masks[filters] = (available, facets, mask)
        return mask

    def _rule_codes(self, rules: Rules) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """The blocklist and the boosts as codes, kept while the rules and the known titles are
        the same (codes only grow, so a blocked id registered later is picked up)."""
        key = (rules, rules.version, len(self.titles.codes))
        cached = self._rule_cache
        if cached is None or cached[0][0] is not rules or cached[0][1:] != key[1:]:
            known = self.titles.known_code
            codes = (np.array(rules.blocked_codes(known), dtype=np.int64), rules.boost_codes(known))
            self._rule_cache = cached = (key, codes)
        return cached[1]

    def _next_episode(self, rules: Rules, history: np.ndarray, allowed: np.ndarray) -> int | None:
        """With continue watching on: the episode after the user's last title, unless watched."""
        if not rules.continue_watching or len(history) == 0:
            return None
        facets, last = self.titles.facets, int(history[-1])
        if last >= facets.count:
            return None
        following = int(facets.next_episode[last])
        if following < 0 or following in set(history.tolist()) or not allowed[following]:
            return None
        return following

    def _popular(self, model: NextTitleModel, allowed: np.ndarray, history: np.ndarray,
                 demoted: np.ndarray | None, k: int) -> list[int]:
        order = model.popular_order
        keep = np.ones(len(order), dtype=bool)
        inside = order < len(allowed)
        keep[inside] = allowed[order[inside]]
        watched = np.isin(order, history)
        ranked = order[keep & ~watched]
        if demoted is not None and len(demoted):
            late = np.isin(ranked, demoted)
            ranked = np.concatenate([ranked[~late], ranked[late]])
        return ranked[:k].tolist()

    def _new_title(self, model: NextTitleModel, history: np.ndarray, allowed: np.ndarray,
                   codes: list[int]) -> int | None:
        """The new title most like the user's recent titles by metadata (genres, series, year),
        when one is alike enough: a title that nobody has watched yet (the model does not know
        it, or counts no watch of it) is otherwise never recommended."""
        facets = self.titles.facets
        new = self._new_codes(model)
        if len(new) == 0:
            return None
        new = new[allowed[new]]
        new = new[~np.isin(new, history)]
        if len(new) == 0:
            return None
        recent = [int(c) for c in history[-NEW_TITLE_HISTORY:] if c < facets.count]
        if not recent:
            return None
        best, best_score = None, NEW_TITLE_MIN_SIMILARITY
        for code in new.tolist():
            score = max(similarity(facets, code, seen) for seen in recent)
            if score > best_score:
                best, best_score = code, score
        return best

    def _new_codes(self, model: NextTitleModel) -> np.ndarray:
        """Titles nobody has watched as far as ``model`` knows: outside it, or without a watch."""
        count = self.titles.facets.count
        key = (id(model), model.version, count)
        if self._new_cache is None or self._new_cache[0] != key:
            unseen = np.flatnonzero(model.popularity <= 0)
            beyond = np.arange(min(model.title_count, count), count)
            self._new_cache = (key, np.concatenate([unseen[unseen < count], beyond]).astype(np.int64))
        return self._new_cache[1]

    # -- why each title ------------------------------------------------------------------------
    def explain(self, model: NextTitleModel | None, history: np.ndarray, ranking: Ranking, codes: list[int]) -> list[dict]:
        """One reason per title of ``codes``: "next episode", "new", "popular", or "because you
        watched X" (the recent title whose neighbour row gives the title its largest share of
        the table's score; for a title only the sequence network put there, the recent title it
        finds most alike)."""
        reasons = []
        history = np.asarray(history, dtype=np.int64)
        for code in codes:
            if code == ranking.first:
                reason = {"reason": "next_episode", "text": "next episode"}
            elif code == ranking.new:
                reason = {"reason": "new", "text": "new"}
            elif ranking.source != "model" or model is None:
                reason = {"reason": "popular", "text": "popular"}
            else:
                because = self._because(model, history, code)
                if because is None:
                    reason = {"reason": "popular", "text": "popular"}
                else:
                    reason = {"reason": "because_you_watched", "watched": self.titles.ids[because],
                              "text": f"because you watched {self.titles.name_of(because)}"}
            reasons.append({"content_id": self.titles.ids[code], **reason})
        return reasons

    def _because(self, model: NextTitleModel, history: np.ndarray, code: int) -> int | None:
        recent = [int(h) for h in history[::-1][: model.weights.window] if 0 <= h < model.title_count]
        weights = model.weights.as_array()
        best, share = None, 0.0
        for position, source in enumerate(recent):
            start, end = model.neighbour_offsets[source], model.neighbour_offsets[source + 1]
            row = model.neighbour_codes[start:end]
            hit = np.flatnonzero(row == code)
            if len(hit):
                value = float(weights[position] * model.neighbour_scores[start + hit[0]])
                if value > share:
                    best, share = source, value
        if best is not None or model.sequence is None or code >= model.title_count:
            return best
        known = [int(h) for h in history[-model.sequence.max_length:] if 0 <= h < model.title_count]
        if not known:
            return None
        items = model.sequence.items
        return known[int(np.argmax(items[known] @ items[code]))]


def similarity(facets, code: int, other: int) -> float:
    """How alike two titles are by metadata, 0 to 2.5: the same series counts 1; genres by their
    overlap (Jaccard); release years by closeness (1 at the same year, 0 twenty years apart),
    half as much."""
    same_series = 1.0 if facets.series[code] >= 0 and facets.series[code] == facets.series[other] else 0.0
    mine, theirs = set(facets.genres[code]), set(facets.genres[other])
    genres = len(mine & theirs) / len(mine | theirs) if mine | theirs else 0.0
    years = 0.0
    if facets.year[code] and facets.year[other]:
        years = max(0.0, 1.0 - abs(int(facets.year[code]) - int(facets.year[other])) / 20.0)
    return same_series + genres + 0.5 * years
