"""The one place Redis key names are built (docs/redis-keys.md describes the layout).

Users are spread over ``shards`` shards by a stable hash of their id. Every key of a user and
the event-log stream of the user's shard carry the shard's hash tag, so in Redis Cluster they
live in one hash slot: the watch script records history, event and cache invalidation in one
atomic call on one node. Each shard's tag is chosen so that the shards sit evenly over the 16384
slots (shard i in the i-th of ``shards`` equal slot ranges): a cluster whose masters own equal
slot ranges, as ``redis-cli --cluster create`` makes them, then holds equal numbers of shards.

Global keys carry their own tags: ``{titles}`` for the catalog, ``{model}`` for the published
models (so that a rollback's WATCH/MULTI and a model's MGET touch one slot).

User ids are validated (``ids.py``) before they reach this module: 1-128 characters from
``[A-Za-z0-9_.:-]``. Within a shard a user's keys are ``u:<user>`` and
``e:<user>|<event id>``: ``|`` never occurs in an id, so no user's key can be another's.
API key names are validated likewise (no braces, no ':').

Only what can be recomputed carries a TTL (event ids, rate-limit buckets): with Redis's
``maxmemory-policy volatile-lru`` eviction can only remove those. A user's cached prediction
lives in the user's state (one key a user), valid only for the history and model version it
was computed from.
"""

from __future__ import annotations

import binascii
import functools
import zlib

SLOTS = 16384  # Redis Cluster's hash slots
LAYOUT_VERSION = 2  # bumped whenever existing data cannot be read with the new names
_TAG_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def key_slot(tag: str) -> int:
    """The hash slot of a key whose hash tag is ``tag`` (Redis's CRC16-XMODEM, mod 16384)."""
    return binascii.crc_hqx(tag.encode(), 0) % SLOTS


@functools.cache
def shard_tags(shards: int) -> tuple[str, ...]:
    """A short hash tag per shard, shard ``i``'s slot in ``[i * 16384 / shards, (i + 1) * 16384 / shards)``.

    Found by trying base-36 strings in order (1 character, then 2, then 3): deterministic, so
    every process and every release names the same shard the same way."""
    if not 1 <= shards <= SLOTS:
        raise ValueError(f"shards must be between 1 and {SLOTS}, got {shards}")
    bounds = [i * SLOTS // shards for i in range(shards + 1)]
    tags: list[str | None] = [None] * shards
    missing = shards
    for length in (1, 2, 3, 4):
        for number in range(len(_TAG_ALPHABET) ** length):
            tag = _base36(number, length)
            slot = key_slot(tag)
            shard = _shard_of_slot(slot, bounds, shards)
            if tags[shard] is None:
                tags[shard] = tag
                missing -= 1
                if not missing:
                    return tuple(tags)  # type: ignore[arg-type]
    raise AssertionError("every slot range has a base-36 tag of at most 4 characters")  # pragma: no cover


def _shard_of_slot(slot: int, bounds: list[int], shards: int) -> int:
    shard = slot * shards // SLOTS
    # Integer rounding can put a slot one range off: correct it against the exact bounds.
    while slot < bounds[shard]:
        shard -= 1
    while slot >= bounds[shard + 1]:
        shard += 1
    return shard


def _base36(number: int, length: int) -> str:
    digits = []
    for _ in range(length):
        number, digit = divmod(number, 36)
        digits.append(_TAG_ALPHABET[digit])
    return "".join(reversed(digits))


class Keys:
    def __init__(self, prefix: str = "nw", shards: int = 64):
        self.prefix = prefix
        self.shards = shards
        self._tags = shard_tags(shards)
        self._shard_roots = tuple(f"{prefix}:{{{tag}}}" for tag in self._tags)

    # -- shards ----------------------------------------------------------------------------------
    def shard_of(self, user_id: str) -> int:
        """The shard of a user: CRC-32 of the id, modulo the number of shards (stable forever
        for a given shard count; changing the count is refused, see ``layout``)."""
        return zlib.crc32(user_id.encode()) % self.shards

    def shard_tag(self, shard: int) -> str:
        return self._tags[shard]

    # -- per user: one hash slot per shard --------------------------------------------------------
    def user(self, user_id: str) -> str:
        """The user's state, one string: uint32 n, the last n watched title codes (oldest
        first), then the cached prediction if any (uint32 stamp, uint32 codes). No TTL."""
        return f"{self._shard_roots[self.shard_of(user_id)]}:u:{user_id}"

    def event_id(self, user_id: str, event_id: str) -> str:
        """The stored answer to an event id already accepted (idempotent retries); has a TTL."""
        return f"{self._shard_roots[self.shard_of(user_id)]}:e:{user_id}|{event_id}"

    def experiment_counts(self, shard: int, experiment: str) -> str:
        """Hash ``<arm>:<count>`` -> number (watches, hits, impressions) of one experiment's
        users in one shard: counted in the user's slot, in the round trip that caches the
        watch's prediction; ``nextwatch experiments report`` sums the shards."""
        return f"{self._shard_roots[shard]}:x:{experiment}"

    def impressions_event_id(self, user_id: str, event_id: str) -> str:
        """The stored answer to an impressions report's event id: apart from the watches' (a
        client may number both from 1)."""
        return f"{self._shard_roots[self.shard_of(user_id)]}:e:{user_id}|i|{event_id}"

    def event_log(self, shard: int) -> str:
        """Redis Stream of one shard's accepted watch events, capped in length; the archiver
        reads every shard's stream as one consumer group."""
        return f"{self._shard_roots[shard]}:events"

    def event_logs(self) -> list[str]:
        """Every shard's event-log stream, in shard order."""
        return [self.event_log(shard) for shard in range(self.shards)]

    def user_event_log(self, user_id: str) -> str:
        return self.event_log(self.shard_of(user_id))

    # -- global --------------------------------------------------------------------------------
    @property
    def layout(self) -> str:
        """Hash {version, shards}: the key layout the data was written with. Every role checks
        it at start and refuses a different shard count (user keys would move)."""
        return f"{self.prefix}:layout"

    @property
    def rules(self) -> str:
        """String: the deployment's rules as JSON {version, blocklist, boosts, continue_watching}
        (service/rules.py); the version is part of every cached prediction's stamp."""
        return f"{self.prefix}:rules"

    @property
    def experiments(self) -> str:
        """Hash experiment name -> JSON {arms: [{name, target, share}], started_at, stopped_at ...}."""
        return f"{self.prefix}:experiments"

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
        return f"{self.prefix}:{{model}}:current"

    @property
    def model_switches(self) -> str:
        """Pub/sub channel: the new current version, published on every switch, so serving
        processes learn it at once (they also poll ``current_model`` as a back-up)."""
        return f"{self.prefix}:model-switches"

    @property
    def model_sequence(self) -> str:
        """Counter handing out model version numbers."""
        return f"{self.prefix}:{{model}}:seq"

    @property
    def model_registry(self) -> str:
        """Sorted set of completely written versions, scored by version number."""
        return f"{self.prefix}:{{model}}:versions"

    def model_meta(self, version: int) -> str:
        """Hash of one version's metadata (trained_at, events, parameters, metrics)."""
        return f"{self.prefix}:{{model}}:{version}:meta"

    def model_array(self, version: int, name: str) -> str:
        """One of a version's arrays, as raw bytes."""
        return f"{self.prefix}:{{model}}:{version}:array:{name}"

    def model_pattern(self) -> str:
        """Matches every key of every version (meta and arrays), for pruning."""
        return f"{self.prefix}:{{model}}:*:*"

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
