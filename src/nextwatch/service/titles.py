"""content_id <-> code for serving: a per-process copy of the catalog's code table.

Models, histories and cached predictions hold dense integer codes; answers hold content ids.
The copy is read once and extended when a code it does not know turns up (a title registered
since, by a watch or an import); a content id never seen before is registered by the store's
atomic script, so every process agrees on its code.
"""

from __future__ import annotations

import threading

import numpy as np

from ..store import Store


class CatalogCodes:
    def __init__(self, store: Store):
        self.store = store
        self.ids: list[str] = []
        self.codes: dict[str, int] = {}
        self._lock = threading.Lock()

    def refresh(self) -> None:
        with self._lock:
            ids = self.store.catalog.all_ids()
            self.ids, self.codes = ids, {content_id: code for code, content_id in enumerate(ids)}

    def code_for(self, content_id: str) -> int:
        """The code of ``content_id``, registering the title if it is new."""
        code = self.codes.get(content_id)
        if code is None:
            code = self.store.catalog.register([content_id])[0]
            with self._lock:
                self.codes[content_id] = code
        return code

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
