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
        """Store metadata (a dict with at least ``content_id``) and register each title. The
        metadata is written in one MULTI/EXEC (all of it or none: a catalog is never half
        imported); codes registered before a failure are harmless (a code without metadata is
        a title known by its id alone)."""
        titles = list(titles)
        self.register([t["content_id"] for t in titles])
        pipe = self.client.pipeline(transaction=True)
        for start in range(0, len(titles), 5_000):
            chunk = titles[start : start + 5_000]
            pipe.hset(self.keys.title_info, mapping={t["content_id"]: json.dumps(t) for t in chunk})
        pipe.execute()
        return len(titles)

    @translate_failures
    def info(self, content_id: str) -> dict | None:
        return _parse_info(self.client.hget(self.keys.title_info, content_id))

    @translate_failures
    def first_title(self) -> str | None:
        """The title with the lowest code: the last step of the fallback chain."""
        raw = self.client.hget(self.keys.title_ids, 0)
        return raw.decode() if raw else None

    # -- reading the catalog for GET /titles (service: catalog_service.py) ---------------------
    @translate_failures
    def sizes(self) -> tuple[int, int]:
        """(titles with a code, titles with metadata), in one round trip. Codes are only ever
        added, so a change in either count means the catalog changed."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hlen(self.keys.title_ids)
        pipe.hlen(self.keys.title_info)
        registered, described = pipe.execute()
        return int(registered), int(described)

    @translate_failures
    def scan(self, batch: int = 2_000) -> tuple[list[str], dict[str, dict]]:
        """Every content id (indexed by code) and every title's metadata. HSCAN in batches
        rather than HGETALL: a catalog of 50,000 titles would block Redis for milliseconds in
        one command, stalling every cached recommendation queued behind it."""
        codes = {int(code): content_id.decode()
                 for code, content_id in self.client.hscan_iter(self.keys.title_ids, count=batch)}
        ids = [codes.get(code, "") for code in range(len(codes))]
        info = {content_id.decode(): _parse_info(raw)
                for content_id, raw in self.client.hscan_iter(self.keys.title_info, count=batch)}
        return ids, info

    @translate_failures
    def titles_from(self, first_code: int, stop_code: int) -> list[tuple[str, dict | None]]:
        """(content id, metadata or None) of codes ``first_code`` .. ``stop_code - 1``: two
        HMGETs, whatever the number of titles."""
        if stop_code <= first_code:
            return []
        raw_ids = self.client.hmget(self.keys.title_ids, list(range(first_code, stop_code)))
        ids = [raw.decode() for raw in raw_ids if raw is not None]
        if not ids:
            return []
        infos = self.client.hmget(self.keys.title_info, ids)
        return [(content_id, _parse_info(raw)) for content_id, raw in zip(ids, infos)]

    @translate_failures
    def describe(self, content_id: str) -> tuple[bool, dict | None]:
        """(whether the title has a code, its metadata or None), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hexists(self.keys.title_codes, content_id)
        pipe.hget(self.keys.title_info, content_id)
        registered, raw = pipe.execute()
        return bool(registered), _parse_info(raw)


def _parse_info(raw: bytes | None) -> dict | None:
    """Metadata as a dict, None when there is none. An entry that is not a JSON object reads as
    ``{}`` (present, but nothing usable): importers write this hash, and one bad entry must
    neither break reading the catalog nor look like a missing one."""
    if raw is None:
        return None
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}
