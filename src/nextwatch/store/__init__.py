"""Redis access. Only this package imports redis; key names come from ``keys.py``.

The same code runs on one Redis and on a Redis Cluster (``connection.py``): every script,
MULTI and MGET touches one hash slot (``keys.py`` says which keys share one).
"""

from __future__ import annotations

import dataclasses

from ..keys import LAYOUT_VERSION, Keys
from ..settings import Settings, SettingsError
from .api_keys import ApiKeyRecord, ApiKeyStore
from .catalog import CatalogStore
from .connection import REDIS_ERRORS, connect, is_cluster, translate_failures
from .commands import ClientCommands, Commands
from .direct_commands import DirectCommands
from .events import EventLog
from .experiments import ExperimentStore
from .models import ModelStore
from .rules import RuleStore
from .user_state import CachedPrediction
from .users import UserStore


@dataclasses.dataclass
class Store:
    """Every Redis-backed part, sharing one client (and its connection pools)."""

    client: object  # redis.Redis or redis.cluster.RedisCluster
    keys: Keys
    users: UserStore
    catalog: CatalogStore
    models: ModelStore
    events: EventLog
    api_keys: ApiKeyStore
    experiments: ExperimentStore
    rules: RuleStore
    commands: Commands  # the request path's commands (commands.py): their own connections on one Redis

    @classmethod
    def from_settings(cls, settings: Settings, client=None, check_layout: bool = True) -> "Store":
        """The store for ``settings``. ``check_layout``: refuse (SettingsError) data written with
        another shard count or an older key layout; skipped while Redis cannot be reached."""
        client = client or connect(settings)
        keys = Keys(settings.key_prefix, settings.shards)
        # The request path's commands (a user's state, a key's rate limit) skip redis-py's
        # per-command layers on one Redis; a cluster keeps its client's routing and retries.
        commands = ClientCommands(client) if is_cluster(client) else DirectCommands(client)
        store = cls(
            client=client,
            keys=keys,
            users=UserStore(client, keys, settings, commands),
            catalog=CatalogStore(client, keys),
            models=ModelStore(client, keys, settings.models_kept),
            events=EventLog(client, keys),
            api_keys=ApiKeyStore(client, keys, commands),
            experiments=ExperimentStore(client, keys),
            rules=RuleStore(client, keys),
            commands=commands,
        )
        if check_layout:
            try:
                store.check_layout()
            except SettingsError:
                store.close()
                raise
            except REDIS_ERRORS:
                pass  # unreachable now: serving starts degraded; the next role that starts checks
        return store

    @property
    def is_cluster(self) -> bool:
        return is_cluster(self.client)

    def check_layout(self) -> None:
        """Record the key layout (version, shards) on first use; SettingsError when the data
        was written with another one. Changing the shard count moves every user's keys to other
        names (and slots), so it is refused rather than silently starting users afresh;
        README (Operations) says how to change it."""
        wanted = {b"version": str(LAYOUT_VERSION).encode(), b"shards": str(self.keys.shards).encode()}
        key = self.keys.layout
        if not self.client.exists(key) and self.client.exists(f"{self.keys.prefix}:model:current"):
            # Layout 1 (before shards) had no layout key, and its model pointer this name.
            raise SettingsError(f"the data under key prefix {self.keys.prefix!r} was written by an older nextwatch "
                                "(key layout 1, before user shards); its histories are not readable by this one. "
                                "Start from an empty Redis (or another NEXTWATCH_KEY_PREFIX) and re-import: "
                                "README, Operations")
        if not self.client.hsetnx(key, "version", wanted[b"version"]):
            recorded = self.client.hgetall(key)
        else:
            self.client.hset(key, "shards", wanted[b"shards"])
            recorded = wanted
        if recorded.get(b"version") != wanted[b"version"]:
            raise SettingsError(f"the data under key prefix {self.keys.prefix!r} was written with key layout "
                                f"{recorded.get(b'version', b'?').decode()}; this nextwatch uses layout "
                                f"{LAYOUT_VERSION} (docs/redis-keys.md)")
        shards = recorded.get(b"shards")
        if shards is not None and shards != wanted[b"shards"]:
            raise SettingsError(f"NEXTWATCH_SHARDS is {self.keys.shards}, but the data under key prefix "
                                f"{self.keys.prefix!r} was written with {shards.decode()} shards: every user's "
                                "keys would move. Keep the recorded value (README, Operations: changing the "
                                "number of shards)")

    @translate_failures
    def ping(self) -> bool:
        return bool(self.client.ping())

    def reachable(self) -> bool:
        try:
            return self.ping()
        except Exception:  # noqa: BLE001 - StoreUnavailable, or anything a dying node raises
            return False

    def close(self) -> None:
        self.commands.close()
        self.client.close()


__all__ = ["Store", "ApiKeyRecord", "CachedPrediction", "connect"]
