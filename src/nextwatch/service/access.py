"""API keys: who may write (POST /watched) and who may administer (/admin/*).

With no key configured the API is open. Once one exists, writes need a key with the role
``write`` or ``admin`` and admin routes one with ``admin``, presented as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Reads (GET /recommend), health,
readiness, metrics and the OpenAPI document stay open.

Redis holds only each key's SHA-256 (store/api_keys.py). Every serving process keeps the set
of hashes in memory and re-reads it at most every ``api_keys_refresh_seconds``: adding or revoking
a key needs no restart, and a request costs one SHA-256 and a ``compare_digest`` per stored key,
no Redis round trip. A presented key is never logged nor repeated in an answer.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import time

from ..errors import Forbidden, InvalidInput, RateLimited, StoreUnavailable, Unauthorized
from ..settings import Settings
from ..store import ApiKeyRecord, Store

WRITE = "write"
ADMIN = "admin"
ROLES = (WRITE, ADMIN)
KEY_NAME_CHARACTERS = "[A-Za-z0-9_.-]"
_KEY_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def validate_key_name(name: object) -> str:
    """Key names become part of a Redis key name (the rate-limit bucket): no ':', no braces."""
    if not isinstance(name, str) or not _KEY_NAME.fullmatch(name):
        raise InvalidInput(f"API key names are 1-64 characters from {KEY_NAME_CHARACTERS}", error="invalid_key_name")
    return name


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "replace")).digest()


def _validate_role(role: object) -> str:
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}, got {role!r}", error="invalid_role")
    return role


def issue_key(store: Store, name: str, role: str) -> str:
    """Create a key, store only its hash, and return the key: the one time it is ever shown."""
    name, role = validate_key_name(name), _validate_role(role)
    key = secrets.token_urlsafe(32)
    store.api_keys.add(ApiKeyRecord(digest_of(key).hex(), name, role, time.time()))
    return key


# A key chosen by its owner (from .env, a secret file) is held to what a generated one gives:
# 32 characters at least, and nothing a header would mangle.
_GIVEN_KEY = re.compile(r"[\x21-\x7e]{32,256}")


def register_key(store: Store, name: str, role: str, key: str, replace: bool = False) -> str:
    """Store only the hash of a key given by its owner under ``name``: "added", "unchanged" (the
    name holds this key and role already) or "replaced" (with ``replace``: the name held another
    key, which stops working). The key itself is never stored, logged nor repeated."""
    name, role = validate_key_name(name), _validate_role(role)
    if not _GIVEN_KEY.fullmatch(key):
        raise InvalidInput("a given API key must be 32 to 256 visible ASCII characters, without spaces "
                           "(`openssl rand -hex 32` makes one)", error="invalid_api_key_value")
    return store.api_keys.add(ApiKeyRecord(digest_of(key).hex(), name, role, time.time()), replace=replace)


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key in ``Authorization: Bearer <key>``, else in ``X-API-Key``, else None."""
    if authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None


def startup_notice(store: Store) -> str:
    """One line for `nextwatch serve` and `nextwatch demo` to print at start-up."""
    try:
        records = store.api_keys.records()
    except StoreUnavailable as problem:
        return (f"API keys: cannot be read yet ({problem.detail}); POST /watched and /admin/* answer 503 "
                "until they can")
    if not records:
        return ("No API keys are configured (writes are open): POST /watched and /admin/* accept anyone "
                "who can reach the port. Create one with `nextwatch keys add NAME --role admin`.")
    roles = {role: sum(r.role == role for r in records) for role in ROLES}
    return (f"API keys: {len(records)} configured ({roles[WRITE]} write, {roles[ADMIN]} admin); POST /watched "
            "and /admin/* need one (Authorization: Bearer <key> or X-API-Key: <key>).")


class AccessControl:
    """The keys this process accepts, refreshed from Redis; checks a request's key and rate."""

    def __init__(self, settings: Settings, store: Store):
        self.store = store
        self.refresh_seconds = settings.api_keys_refresh_seconds
        self.rate = settings.rate_limit
        self.burst = settings.rate_limit_capacity
        # (sha256 digest, name, role) per key; None until first read from Redis.
        self._entries: tuple[tuple[bytes, str, str], ...] | None = None
        self._refresh_at = 0.0
        self._lock = threading.Lock()

    def enforced(self) -> bool:
        """True when keys are configured. Between refreshes, one clock read and a comparison:
        the hot path asks this first and reads no header while the API is open."""
        if time.monotonic() >= self._refresh_at:
            self._refresh()
        return bool(self._entries)

    def require(self, role: str, authorization: str | None, x_api_key: str | None) -> str | None:
        """The name of the presented key if it may use a route needing ``role`` (None when no
        key is configured); else Unauthorized, Forbidden or RateLimited."""
        entries = self._current()
        if not entries:
            return None
        key = presented_key(authorization, x_api_key)
        if key is None:
            raise Unauthorized("this route needs an API key: Authorization: Bearer <key> or X-API-Key: <key>")
        digest = digest_of(key)
        found = None
        for stored, name, key_role in entries:  # all of them, no early exit: the time taken
            if hmac.compare_digest(digest, stored):  # does not tell which key matched
                found = (name, key_role)
        if found is None:
            raise Unauthorized("the API key is not valid (unknown or revoked)", error="invalid_api_key")
        name, key_role = found
        if role == ADMIN and key_role != ADMIN:
            raise Forbidden(f"this route needs an admin key; the key {name!r} has the role {key_role!r}")
        if self.rate > 0:
            wait = self.store.api_keys.take_token(name, self.rate, self.burst)
            if wait > 0:
                raise RateLimited(f"the API key {name!r} is limited to {self.rate:g} requests per second "
                                  f"(bursts of {self.burst:g})", math.ceil(wait))
        return name

    def _current(self) -> tuple[tuple[bytes, str, str], ...] | None:
        if time.monotonic() >= self._refresh_at:
            self._refresh()
        return self._entries

    def _refresh(self) -> None:
        # The first read is waited for; later, one thread re-reads while the others go on with
        # the set they have.
        if not self._lock.acquire(blocking=self._entries is None):
            return
        try:
            if time.monotonic() < self._refresh_at:
                return  # another thread refreshed while this one waited
            try:
                records = self.store.api_keys.records()
            except StoreUnavailable:
                if self._entries is None:
                    raise  # never treat "could not read the keys" as "there are none"
                records = None  # keep the last set read; try again after an interval
            if records is not None:
                self._entries = tuple((bytes.fromhex(r.digest), r.name, r.role) for r in records)
            self._refresh_at = time.monotonic() + self.refresh_seconds
        finally:
            self._lock.release()
