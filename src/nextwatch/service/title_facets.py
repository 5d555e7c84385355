"""What serving needs to know of every title beyond its code, as arrays over title codes: for
filters (genre, maturity, region), the availability window, series order (continue watching),
and what a new title has in common with others (cold start).

Built from the catalog's metadata (datasets/title_metadata.py describes the fields); held per
process and rebuilt when the catalog changes (``service/catalog.py`` holds the snapshot it is
built from). A title without metadata is for everyone, everywhere, always.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

NEVER = math.inf


@dataclasses.dataclass(frozen=True)
class Filters:
    """What a request narrows the recommendations to. Every field None or empty: no filter
    (availability always applies)."""

    genre: str | None = None  # case-folded
    exclude: tuple[str, ...] = ()
    max_maturity: int | None = None
    region: str | None = None  # ISO 3166 alpha-2, upper case

    @property
    def any(self) -> bool:
        return bool(self.genre or self.exclude or self.max_maturity is not None or self.region)


class TitleFacets:
    def __init__(self, ids: Sequence[str], infos: Sequence[dict | None]):
        count = len(ids)
        self.count = count
        self.ids = list(ids)
        self.maturity = np.zeros(count, dtype=np.int16)
        self.available_from = np.full(count, -NEVER)
        self.available_until = np.full(count, NEVER)
        self.restricted = np.zeros(count, dtype=bool)  # shown in some regions only
        self.genres: list[tuple[str, ...]] = [()] * count  # case-folded
        self.year = np.zeros(count, dtype=np.int32)  # 0: unknown
        self.series = np.full(count, -1, dtype=np.int32)
        self.next_episode = np.full(count, -1, dtype=np.int32)
        self.genre_masks: dict[str, np.ndarray] = {}
        self.region_masks: dict[str, np.ndarray] = {}
        self.series_names: list[str] = []
        self.names: dict[int, str] = {}
        episodes: dict[int, list[tuple[int, int, int]]] = {}
        series_index: dict[str, int] = {}
        for code, info in enumerate(infos):
            if not info:
                continue
            self._read(code, info)
            series = info.get("series")
            if isinstance(series, str) and isinstance(info.get("season"), int) and isinstance(info.get("episode"), int):
                number = series_index.setdefault(series, len(series_index))
                self.series[code] = number
                episodes.setdefault(number, []).append((info["season"], info["episode"], code))
        self.series_names = list(series_index)
        for listed in episodes.values():
            listed.sort()
            for (_s, _e, code), (_s2, _e2, following) in zip(listed, listed[1:]):
                self.next_episode[code] = following
        # The latest start of availability: a title that starts no later than a day ago is not new.
        self.latest_start = float(self.available_from.max()) if count else -NEVER
        self._windows = np.unique(np.concatenate([self.available_from[np.isfinite(self.available_from)],
                                                  self.available_until[np.isfinite(self.available_until)]]))

    def _read(self, code: int, info: dict) -> None:
        name = info.get("name")
        if isinstance(name, str) and name.strip():
            self.names[code] = name.strip()
        maturity = info.get("maturity")
        if isinstance(maturity, int) and not isinstance(maturity, bool):
            self.maturity[code] = maturity
        for field, array in (("available_from", self.available_from), ("available_until", self.available_until)):
            value = info.get(field)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                array[code] = float(value)
        genres = info.get("genres")
        if isinstance(genres, list):
            folded = tuple(dict.fromkeys(g.strip().casefold() for g in genres if isinstance(g, str) and g.strip()))
            self.genres[code] = folded
            for genre in folded:
                self._mask(self.genre_masks, genre)[code] = True
        regions = info.get("regions")
        if isinstance(regions, list) and regions:
            self.restricted[code] = True
            for region in regions:
                if isinstance(region, str):
                    self._mask(self.region_masks, region.upper())[code] = True
        year = info.get("year")
        if isinstance(year, int) and not isinstance(year, bool):
            self.year[code] = year

    def _mask(self, masks: dict[str, np.ndarray], name: str) -> np.ndarray:
        if name not in masks:
            masks[name] = np.zeros(self.count, dtype=bool)
        return masks[name]

    # -- what may be recommended ---------------------------------------------------------------
    def available(self, now: float) -> np.ndarray:
        """True for every title inside its availability window at ``now``."""
        return (self.available_from <= now) & (now < self.available_until)

    def next_change(self, after: float) -> float:
        """The first window boundary later than ``after`` (inf: none): when ``available``
        must be computed again."""
        later = self._windows[self._windows > after]
        return float(later[0]) if len(later) else NEVER

    def allowed(self, filters: Filters, available: np.ndarray, code_of) -> np.ndarray:
        """Titles a request with ``filters`` may be shown: available, and passing each filter.
        ``code_of``: content id -> code (None when unknown), for ``exclude``."""
        mask = available.copy()
        if filters.genre:
            genre = self.genre_masks.get(filters.genre)
            if genre is None:  # no title has it: nothing passes
                mask[:] = False
            else:
                mask &= genre
        if filters.max_maturity is not None:
            mask &= self.maturity <= filters.max_maturity
        if filters.region:
            region = self.region_masks.get(filters.region)
            mask &= ~self.restricted if region is None else (~self.restricted | region)
        for content_id in filters.exclude:
            code = code_of(content_id)
            if code is not None and code < self.count:
                mask[code] = False
        return mask
