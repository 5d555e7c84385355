"""Browsing the title catalog: GET /titles (paged, filtered), GET /titles/<id>, GET /genres.

Each serving process answers pages from its own snapshot of the catalog (ids in code order,
names, genres). Filtering by name or genre has to look at every title, and reading tens of
thousands of titles from Redis for every page would cost Redis milliseconds that the
recommendations queued behind them would wait for. Every request checks the snapshot against
Redis in one round trip (the lengths of the two catalog hashes): titles registered since are
read alone and appended; any other change, and in any case a snapshot older than
REFRESH_SECONDS (metadata rewritten in place changes no length), means reading it all again.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable

from ..errors import NotFound
from ..store import Store

DEFAULT_LIMIT = 24
MAX_LIMIT = 100
MAX_PAGE = 1_000_000
MAX_TEXT_LENGTH = 100
MAX_GENRE_LENGTH = 64
MAX_IDS = 100
REFRESH_SECONDS = 30.0
# More new titles than this (an import) are read with HSCAN like the rest, not in one HMGET
# that would hold Redis up for as long as it takes.
MAX_APPENDED = 2_000


@dataclasses.dataclass(frozen=True, slots=True)
class Title:
    content_id: str
    name: str | None
    genres: tuple[str, ...]
    year: int | None

    @classmethod
    def from_info(cls, content_id: str, info: dict | None) -> "Title":
        """A title from its stored metadata, keeping only well-formed fields: the hash is
        written by importers, and the API promises a fixed shape."""
        info = info or {}
        name, genres, year = info.get("name"), info.get("genres"), info.get("year")
        if not isinstance(name, str) or not name.strip():
            name = None
        if not isinstance(genres, list):
            genres = []
        genres = tuple(dict.fromkeys(g.strip() for g in genres if isinstance(g, str) and g.strip()))
        if not isinstance(year, int) or isinstance(year, bool):
            year = None
        return cls(content_id, name.strip() if name else None, genres, year)

    def to_json(self) -> dict:
        return {"content_id": self.content_id, "name": self.name, "genres": list(self.genres), "year": self.year}


@dataclasses.dataclass(frozen=True)
class TitleQuery:
    """What GET /titles asks for (api/inputs.py parses it). ``text`` and ``genre`` are
    case-folded; ``ids`` None means the whole catalog."""

    page: int = 1
    limit: int = DEFAULT_LIMIT
    text: str = ""
    genre: str = ""
    ids: tuple[str, ...] | None = None


class CatalogSnapshot:
    """One process's read-only copy of the catalog, with what the filters need precomputed."""

    def __init__(self, titles: list[Title], sizes: tuple[int, int], taken_at: float):
        self.titles = titles
        self.sizes = sizes  # (titles with a code, titles with metadata) when it was read
        self.taken_at = taken_at
        self.position: dict[str, int] = {}
        self.search_text: list[str] = []  # the case-folded name and id, what ?q= looks in
        self.by_genre: dict[str, list[int]] = {}  # case-folded genre -> positions
        self.genre_names: dict[str, str] = {}  # case-folded genre -> its spelling first met
        self._index(0)

    def _index(self, start: int) -> None:
        for position in range(start, len(self.titles)):
            title = self.titles[position]
            self.position[title.content_id] = position
            self.search_text.append(f"{title.name or ''}\n{title.content_id}".casefold())
            for genre in title.genres:
                folded = genre.casefold()
                self.genre_names.setdefault(folded, genre)
                self.by_genre.setdefault(folded, []).append(position)

    def extended(self, titles: list[Title], sizes: tuple[int, int]) -> "CatalogSnapshot":
        """A new snapshot with ``titles`` appended; this one stays as it is for the requests
        still reading it. Copying the containers is C-speed; only the new titles are indexed."""
        grown = object.__new__(CatalogSnapshot)
        grown.titles = self.titles + titles
        grown.sizes, grown.taken_at = sizes, self.taken_at
        grown.position, grown.search_text = dict(self.position), list(self.search_text)
        grown.by_genre = {genre: list(positions) for genre, positions in self.by_genre.items()}
        grown.genre_names = dict(self.genre_names)
        grown._index(len(self.titles))
        return grown

    def select(self, query: TitleQuery) -> tuple[list[Title], int]:
        """The titles of the asked page, and how many titles match in all."""
        positions: list[int] | range
        if query.ids is not None:
            positions = [self.position[c] for c in query.ids if c in self.position]
            if query.genre:
                positions = [p for p in positions
                             if any(g.casefold() == query.genre for g in self.titles[p].genres)]
        elif query.genre:
            positions = self.by_genre.get(query.genre, [])
        else:
            positions = range(len(self.titles))
        if query.text:
            search_text, text = self.search_text, query.text
            positions = [p for p in positions if text in search_text[p]]
        start = (query.page - 1) * query.limit
        return [self.titles[p] for p in positions[start : start + query.limit]], len(positions)

    def genres(self) -> list[dict]:
        """Every genre with its number of titles, the most common first."""
        counted = [(self.genre_names[g], len(positions)) for g, positions in self.by_genre.items()]
        return [{"name": name, "titles": n} for name, n in sorted(counted, key=lambda item: (-item[1], item[0]))]


class CatalogService:
    def __init__(self, store: Store, refresh_seconds: float = REFRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self._snapshot: CatalogSnapshot | None = None
        self._lock = threading.Lock()

    def titles(self, query: TitleQuery) -> dict:
        items, total = self.snapshot().select(query)
        return {
            "items": [title.to_json() for title in items],
            "page": query.page,
            "limit": query.limit,
            "total": total,
            "pages": -(-total // query.limit),
        }

    def title(self, content_id: str) -> dict:
        registered, info = self.store.catalog.describe(content_id)
        if not registered and info is None:
            raise NotFound(f"no title {content_id!r} in the catalog", error="unknown_title")
        return Title.from_info(content_id, info).to_json()

    def genres(self) -> dict:
        return {"genres": self.snapshot().genres()}

    def snapshot(self) -> CatalogSnapshot:
        """The current snapshot, refreshed first if Redis says the catalog changed."""
        sizes = self.store.catalog.sizes()
        current = self._snapshot
        if self._fresh(current, sizes):
            return current
        with self._lock:  # one thread reads the catalog; the others wait for its copy
            current = self._snapshot
            if not self._fresh(current, sizes):
                self._snapshot = current = self._refreshed(current, sizes)
            return current

    def _fresh(self, snapshot: CatalogSnapshot | None, sizes: tuple[int, int]) -> bool:
        return (snapshot is not None and snapshot.sizes == sizes
                and self.clock() - snapshot.taken_at < self.refresh_seconds)

    def _refreshed(self, current: CatalogSnapshot | None, sizes: tuple[int, int]) -> CatalogSnapshot:
        now = self.clock()
        if (current is not None and now - current.taken_at < self.refresh_seconds
                and 0 < sizes[0] - current.sizes[0] <= MAX_APPENDED):
            # Codes are only ever added: the new titles are the codes from the old count on.
            added = self.store.catalog.titles_from(current.sizes[0], sizes[0])
            described = current.sizes[1] + sum(info is not None for _, info in added)
            if len(added) == sizes[0] - current.sizes[0] and described == sizes[1]:
                return current.extended([Title.from_info(c, info) for c, info in added], sizes)
        # The sizes read before the scan: if the catalog changes during it, the next request
        # sees other sizes and refreshes again.
        ids, info = self.store.catalog.scan()
        return CatalogSnapshot([Title.from_info(c, info.get(c)) for c in ids if c], sizes, now)
