"""The title catalog: content ids <-> dense integer codes, and title metadata.

Codes are handed out once and never change, so histories (stored as codes) stay valid across
model versions. Models are arrays indexed by code; a title registered after a model was
trained simply has no row in it yet.
"""

from __future__ import annotations

import json
from typing import Iterable

import redis

from ..keys import Keys
from .connection import translate_failures

# Registers ids that have no code yet, in order; returns every id's code. Atomic, so two
# processes registering the same new title agree on its code.
_REGISTER = """
local codes = {}
for i, content_id in ipairs(ARGV) do
  local code = redis.call('HGET', KEYS[1], content_id)
  if not code then
    code = redis.call('HLEN', KEYS[1])
    redis.call('HSET', KEYS[1], content_id, code)
    redis.call('HSET', KEYS[2], code, content_id)
  end
  codes[i] = tonumber(code)
end
return codes
"""


class CatalogStore:
    def __init__(self, client: redis.Redis, keys: Keys):
        self.client = client
        self.keys = keys
        self._register = client.register_script(_REGISTER)

    @translate_failures
    def register(self, content_ids: list[str], batch: int = 5_000) -> list[int]:
        """Codes for ``content_ids``, registering the new ones (in the order given)."""
        codes: list[int] = []
        for start in range(0, len(content_ids), batch):
            chunk = content_ids[start : start + batch]
            codes.extend(self._register(keys=[self.keys.title_codes, self.keys.title_ids], args=chunk))
        return codes

    @translate_failures
    def all_ids(self) -> list[str]:
        """Content ids indexed by code."""
        raw = self.client.hgetall(self.keys.title_ids)
        ids = [""] * len(raw)
        for code, content_id in raw.items():
            ids[int(code)] = content_id.decode()
        return ids

    @translate_failures
    def save_info(self, titles: Iterable[dict]) -> int:
        """Store metadata (a dict with at least ``content_id``) and register each title."""
        titles = list(titles)
        self.register([t["content_id"] for t in titles])
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, len(titles), 5_000):
            chunk = titles[start : start + 5_000]
            pipe.hset(self.keys.title_info, mapping={t["content_id"]: json.dumps(t) for t in chunk})
        pipe.execute()
        return len(titles)

    @translate_failures
    def info(self, content_id: str) -> dict | None:
        raw = self.client.hget(self.keys.title_info, content_id)
        return json.loads(raw) if raw else None

    @translate_failures
    def first_title(self) -> str | None:
        """The title with the lowest code: the last step of the fallback chain."""
        raw = self.client.hget(self.keys.title_ids, 0)
        return raw.decode() if raw else None
