"""The catalog as serving needs it, one copy per process: content_id <-> code, and every
title's facets (filters, availability, series order, metadata for new titles: title_facets.py).

Models, histories and cached predictions hold dense integer codes; answers hold content ids.
The copy is read once, and again when a code it does not know turns up (a title registered
since, by a watch or an import) or, at most every REFRESH_SECONDS, when the catalog's sizes
changed or the copy is older than MAX_AGE_SECONDS (metadata rewritten in place changes no size).
A content id never seen before is registered by the store's atomic script, so every process
agrees on its code.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np

from ..errors import StoreUnavailable
from ..store import Store
from .title_facets import TitleFacets

REFRESH_SECONDS = 5.0  # how often a request may check the catalog's sizes (one round trip)
MAX_AGE_SECONDS = 60.0


class CatalogCodes:
    def __init__(self, store: Store, clock=time.time):
        self.store = store
        self.clock = clock
        self.ids: list[str] = []
        self.codes: dict[str, int] = {}
        self.facets = TitleFacets([], [])
        self._sizes: tuple[int, int] | None = None
        self._read_at = -math.inf
        self._checked_at = -math.inf
        self._available: np.ndarray = np.zeros(0, dtype=bool)
        self.all_available = True  # every title is inside its window now (set by ``available``)
        self._available_until = -math.inf  # when the availability must be computed again
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Read the whole catalog again (ids and metadata)."""
        with self._lock:
            sizes = self.store.catalog.sizes()
            ids, info = self.store.catalog.scan()
            facets = TitleFacets(ids, [info.get(content_id) for content_id in ids])
            self.ids, self.codes, self.facets = ids, {c: code for code, c in enumerate(ids)}, facets
            self._sizes, self._read_at, self._checked_at = sizes, self.clock(), self.clock()
            self._available_until = -math.inf

    def keep_fresh(self) -> None:
        """At most every REFRESH_SECONDS: read the catalog again if it changed or is old. A Redis
        that cannot be reached leaves the copy as it is."""
        now = self.clock()
        if now - self._checked_at < REFRESH_SECONDS:
            return
        self._checked_at = now
        try:
            if self.store.catalog.sizes() != self._sizes or now - self._read_at >= MAX_AGE_SECONDS:
                self.refresh()
        except StoreUnavailable:
            pass

    def code_for(self, content_id: str) -> int:
        """The code of ``content_id``, registering the title if it is new."""
        code = self.codes.get(content_id)
        if code is None:
            code = self.store.catalog.register([content_id])[0]
            with self._lock:
                self.codes[content_id] = code
        return code

    def known_code(self, content_id: str) -> int | None:
        return self.codes.get(content_id)

    def ids_for(self, codes) -> list[str]:
        codes = codes.tolist() if isinstance(codes, np.ndarray) else [int(c) for c in codes]
        if codes and max(codes) >= len(self.ids):
            self.refresh()
        return [self.ids[c] for c in codes]

    def first_codes(self, count: int) -> list[int]:
        """The ``count`` lowest codes: the catalog's first titles, the last fallback."""
        if not self.ids:
            self.refresh()
        return list(range(min(len(self.ids), count)))

    def available(self) -> np.ndarray:
        """True for every title inside its availability window now (recomputed only when a
        window opens or closes, or the catalog was read again)."""
        now = self.clock()
        if now >= self._available_until or len(self._available) != self.facets.count:
            facets = self.facets
            self._available = facets.available(now)
            self._available_until = facets.next_change(now)
            self.all_available = bool(self._available.all())
        return self._available

    def name_of(self, code: int) -> str:
        """The title's name for explanations (its id when it has none)."""
        return self.facets.names.get(code) or self.ids[code]
