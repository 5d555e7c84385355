"""API keys and their rate-limit buckets.

Only the SHA-256 of a key is stored: a hash (``keys.api_keys``) from the hex digest to JSON
``{name, role, created_at}``. Whoever reads Redis learns names and roles, never a usable key.
Key names are unique; they name the key in ``nextwatch keys`` and its rate-limit bucket.
"""

from __future__ import annotations

import dataclasses
import json

import redis

from ..errors import Conflict
from ..keys import Keys
from .commands import Commands, StoreScript
from .connection import translate_failures


@dataclasses.dataclass(frozen=True)
class ApiKeyRecord:
    digest: str  # SHA-256 of the key, hex
    name: str
    role: str
    created_at: float


class ApiKeyStore:
    def __init__(self, client: redis.Redis, keys: Keys, commands: Commands):
        """``commands``: the way of a request's rate-limit script (``commands.py``)."""
        self.client = client
        self.keys = keys
        self._commands = commands
        self._take_token = StoreScript.of("rate_limit.lua")

    @translate_failures
    def records(self) -> list[ApiKeyRecord]:
        """Every stored key, oldest first (one HGETALL)."""
        raw = self.client.hgetall(self.keys.api_keys)
        records = []
        for digest, value in raw.items():
            info = json.loads(value)
            records.append(ApiKeyRecord(digest.decode(), info["name"], info["role"], float(info["created_at"])))
        return sorted(records, key=lambda record: (record.created_at, record.name))

    @translate_failures
    def add(self, record: ApiKeyRecord, replace: bool = False) -> str:
        """Store a key's hash under its name, atomically against a concurrent change: "added";
        "unchanged" when the name already holds this very key and role; "replaced" when it holds
        another and ``replace`` is set. Conflict when the name is taken (without ``replace``), or
        when this key is stored under another name (one hash, one record: storing it again would
        silently rename that key and change its role)."""
        value = json.dumps({"name": record.name, "role": record.role, "created_at": record.created_at})

        def put(pipe) -> str:
            stored = {digest.decode(): json.loads(info) for digest, info in pipe.hgetall(self.keys.api_keys).items()}
            holder = stored.get(record.digest)
            if holder is not None and holder["name"] != record.name:
                raise Conflict(f"this key is already stored under the name {holder['name']!r}", error="key_taken")
            named = [digest for digest, info in stored.items() if info["name"] == record.name]
            if named == [record.digest] and holder["role"] == record.role:
                return "unchanged"
            if named and not replace:
                raise Conflict(f"an API key named {record.name!r} exists; revoke it first", error="name_taken")
            pipe.multi()
            if named:
                pipe.hdel(self.keys.api_keys, *named)
            pipe.hset(self.keys.api_keys, record.digest, value)
            return "replaced" if named else "added"

        return self.client.transaction(put, self.keys.api_keys, value_from_callable=True)

    @translate_failures
    def revoke(self, name: str) -> bool:
        """Delete the key called ``name`` (and its rate-limit bucket); False if there is none."""
        digests = [r.digest for r in self.records() if r.name == name]
        if not digests:
            return False
        # Two keys in two hash slots, so two commands: the key first (from then on it is
        # refused), its bucket second (a leftover bucket only expires).
        self.client.hdel(self.keys.api_keys, *digests)
        self.client.delete(self.keys.rate_limit(name))
        return True

    @translate_failures
    def take_token(self, name: str, rate: float, burst: float) -> float:
        """Take one request from the key's token bucket: 0.0 if allowed, else the seconds until
        the next token (one round trip, atomic across workers and replicas)."""
        keys, args = [self.keys.rate_limit(name)], [repr(rate), repr(burst)]
        taken, wait = self._commands.script(self._take_token.sha, self._take_token.source, keys, args)
        return 0.0 if taken else float(wait)
