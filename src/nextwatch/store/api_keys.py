"""API keys and their rate-limit buckets.

Only the SHA-256 of a key is stored: a hash (``keys.api_keys``) from the hex digest to JSON
``{name, role, created_at}``. Whoever reads Redis learns names and roles, never a usable key.
Key names are unique; they name the key in ``nextwatch keys`` and its rate-limit bucket.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json

import redis

from ..errors import Conflict
from ..keys import Keys
from .connection import translate_failures


@dataclasses.dataclass(frozen=True)
class ApiKeyRecord:
    digest: str  # SHA-256 of the key, hex
    name: str
    role: str
    created_at: float


class ApiKeyStore:
    def __init__(self, client: redis.Redis, keys: Keys):
        self.client = client
        self.keys = keys
        source = importlib.resources.files(__package__).joinpath("rate_limit.lua").read_text()
        self._take_token = client.register_script(source)

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
    def add(self, record: ApiKeyRecord) -> None:
        """Store a new key's hash; Conflict if the name is taken. Atomic against a concurrent add."""
        value = json.dumps({"name": record.name, "role": record.role, "created_at": record.created_at})

        def add_if_new(pipe) -> None:
            names = {json.loads(v)["name"] for v in pipe.hvals(self.keys.api_keys)}
            if record.name in names:
                raise Conflict(f"an API key named {record.name!r} exists; revoke it first", error="name_taken")
            pipe.multi()
            pipe.hset(self.keys.api_keys, record.digest, value)

        self.client.transaction(add_if_new, self.keys.api_keys)

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
        taken, wait = self._take_token(keys=[self.keys.rate_limit(name)], args=[repr(rate), repr(burst)])
        return 0.0 if taken else float(wait)
