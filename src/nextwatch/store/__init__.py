"""Redis access. Only this package imports redis; key names come from ``keys.py``."""

from __future__ import annotations

import dataclasses

import redis

from ..keys import Keys
from ..settings import Settings
from .api_keys import ApiKeyRecord, ApiKeyStore
from .catalog import CatalogStore
from .connection import UNREACHABLE, connect
from .events import EventLog
from .models import ModelStore
from .users import CachedPrediction, UserStore


@dataclasses.dataclass
class Store:
    """Every Redis-backed part, sharing one connection pool."""

    client: redis.Redis
    keys: Keys
    users: UserStore
    catalog: CatalogStore
    models: ModelStore
    events: EventLog
    api_keys: ApiKeyStore

    @classmethod
    def from_settings(cls, settings: Settings, client: redis.Redis | None = None) -> "Store":
        client = client or connect(settings)
        keys = Keys(settings.key_prefix)
        return cls(
            client=client,
            keys=keys,
            users=UserStore(client, keys, settings),
            catalog=CatalogStore(client, keys),
            models=ModelStore(client, keys, settings.models_kept),
            events=EventLog(client, keys),
            api_keys=ApiKeyStore(client, keys),
        )

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except UNREACHABLE:
            return False

    def close(self) -> None:
        self.client.close()


__all__ = ["Store", "ApiKeyRecord", "CachedPrediction", "connect"]
