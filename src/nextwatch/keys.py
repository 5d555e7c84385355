"""The one place Redis key names are built (docs/redis-keys.md describes the layout).

All of one user's keys share the hash tag ``{u:<user_id>}``, so that in Redis Cluster a user's
history, cached prediction and event ids live on one shard and a request's script or pipeline
touches one node. Global keys (models, catalog, event log) carry their own tags.
User ids are validated (see ``ids.py``) before they reach this module: they never contain
braces, so a user id cannot break out of its hash tag. API key names are validated likewise
(``auth.validate_key_name``: no braces, no ':').

Only caches carry a TTL (cached predictions, event ids, rate-limit buckets): with Redis's
``maxmemory-policy volatile-lru`` eviction can only remove what can be recomputed.
"""

from __future__ import annotations


class Keys:
    def __init__(self, prefix: str = "nw"):
        self.prefix = prefix

    # -- per user: one hash slot per user ------------------------------------------------------
    def history(self, user_id: str) -> str:
        """String of little-endian uint32 title codes, oldest first, capped in length."""
        return f"{self.prefix}:{{u:{user_id}}}:h"

    def prediction(self, user_id: str) -> str:
        """Cached prediction: uint32 model version then uint32 title codes; has a TTL."""
        return f"{self.prefix}:{{u:{user_id}}}:p"

    def event_id(self, user_id: str, event_id: str) -> str:
        """The stored answer to an event id already accepted (idempotent retries); has a TTL."""
        return f"{self.prefix}:{{u:{user_id}}}:e:{event_id}"

    # -- global --------------------------------------------------------------------------------
    @property
    def event_log(self) -> str:
        """Redis Stream of accepted watch events, capped in length; the archiver and the refiner
        read it, each as its own consumer group."""
        return f"{self.prefix}:events"

    @property
    def title_codes(self) -> str:
        """Hash content_id -> dense integer code (stable forever; models are arrays over codes)."""
        return f"{self.prefix}:{{titles}}:code"

    @property
    def title_ids(self) -> str:
        """Hash code -> content_id (the inverse of title_codes)."""
        return f"{self.prefix}:{{titles}}:id"

    @property
    def title_info(self) -> str:
        """Hash content_id -> JSON metadata (name, genres, year ...)."""
        return f"{self.prefix}:{{titles}}:info"

    @property
    def current_model(self) -> str:
        """The published model version that serving uses; switched with one SET."""
        return f"{self.prefix}:model:current"

    @property
    def model_sequence(self) -> str:
        """Counter handing out model version numbers."""
        return f"{self.prefix}:model:seq"

    @property
    def model_registry(self) -> str:
        """Sorted set of completely written versions, scored by version number."""
        return f"{self.prefix}:model:versions"

    def model_meta(self, version: int) -> str:
        """Hash of one version's metadata (trained_at, events, parameters, metrics)."""
        return f"{self.prefix}:model:{version}:meta"

    def model_array(self, version: int, name: str) -> str:
        """One of a version's arrays, as raw bytes."""
        return f"{self.prefix}:model:{version}:array:{name}"

    def model_pattern(self) -> str:
        """Matches every key of every version (meta and arrays), for pruning."""
        return f"{self.prefix}:model:*:*"

    @property
    def api_keys(self) -> str:
        """Hash SHA-256 hex of an API key -> JSON {name, role, created_at}; never the key itself."""
        return f"{self.prefix}:apikeys"

    def rate_limit(self, key_name: str) -> str:
        """Token bucket of one API key (hash: tokens, ts); has a TTL of the time to refill it."""
        return f"{self.prefix}:ratelimit:{key_name}"

    def model_version_of(self, key: str) -> int | None:
        """The version a key from ``model_pattern`` belongs to (the prefix holds no ':')."""
        part = key.split(":")[2]
        return int(part) if part.isdigit() else None
