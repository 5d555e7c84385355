"""Published models: versioned, switched atomically, old versions pruned.

Publishing writes every array and the metadata of a new version under its own keys, records
the version in the registry, and only then points ``current`` at it with one SET. Readers load a
version as a whole, so they see the old model or the new one, never a mix. A publisher that
dies half-way leaves keys of a version that is not in the registry; the next publish deletes them.
"""

from __future__ import annotations

import time

import redis

from ..errors import Conflict
from ..keys import Keys
from ..model import NextTitleModel
from .connection import translate_failures

CHUNKS = "chunks:"  # metadata field per array: how many keys hold it
CHUNK_BYTES = 64 * 1024 * 1024  # Redis strings may hold 512 MiB; smaller pieces stream better.


class ModelStore:
    def __init__(self, client: redis.Redis, keys: Keys, models_kept: int = 3):
        self.client = client
        self.keys = keys
        self.models_kept = models_kept

    @translate_failures
    def current_version(self) -> int:
        raw = self.client.get(self.keys.current_model)
        return int(raw) if raw else 0

    @translate_failures
    def publish(self, model: NextTitleModel, extra_meta: dict[str, str] | None = None, activate: bool = True) -> int:
        version = int(self.client.incr(self.keys.model_sequence))
        model.version = version
        arrays, meta = model.to_payload()
        meta.update(extra_meta or {})
        meta["published_at"] = repr(time.time())
        pipe = self.client.pipeline(transaction=False)
        for name, data in arrays.items():
            chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
            meta[CHUNKS + name] = str(len(chunks))
            for index, chunk in enumerate(chunks):
                pipe.set(self.keys.model_array(version, f"{name}:{index}"), chunk)
        pipe.hset(self.keys.model_meta(version), mapping=meta)
        pipe.execute()
        self.client.zadd(self.keys.model_registry, {str(version): version})
        if activate:
            self.activate(version)
        self.prune()
        return version

    @translate_failures
    def activate(self, version: int) -> None:
        if self.client.zscore(self.keys.model_registry, str(version)) is None:
            raise KeyError(f"model version {version} is not published")
        self.client.set(self.keys.current_model, version)
        self._announce(version)

    def _announce(self, version: int) -> None:
        """Tell serving processes at once (they also poll, so a lost message only delays)."""
        self.client.publish(self.keys.model_switches, str(version))

    @translate_failures
    def listen_for_switches(self) -> "ModelSwitches":
        """A subscription to version switches, on its own connection (see ``ModelSwitches``)."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.keys.model_switches)
        return ModelSwitches(pubsub)

    @translate_failures
    def rollback(self) -> int:
        """Point ``current`` at the newest published version older than it; return that version.

        Conflict (409) when there is none. WATCHed, so a publish or activate racing the rollback
        makes it start over rather than switch to a version chosen from a stale view."""

        def switch_back(pipe) -> int:
            raw = pipe.get(self.keys.current_model)
            current = int(raw) if raw else 0
            older = [int(v) for v in pipe.zrangebyscore(self.keys.model_registry, "-inf", f"({current}")]
            if not current or not older:
                what = f"version {current}" if current else "no version (none is current)"
                raise Conflict(f"no published model version is older than {what}", error="nothing_to_roll_back")
            pipe.multi()
            pipe.set(self.keys.current_model, older[-1])
            return older[-1]

        version = self.client.transaction(switch_back, self.keys.current_model, self.keys.model_registry,
                                          value_from_callable=True)
        self._announce(version)
        return version

    @translate_failures
    def versions(self) -> list[int]:
        return [int(v) for v in self.client.zrange(self.keys.model_registry, 0, -1)]

    @translate_failures
    def metadata(self, version: int) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.client.hgetall(self.keys.model_meta(version)).items()}

    @translate_failures
    def load(self, version: int) -> NextTitleModel | None:
        """The whole of one version, or None if it is gone (pruned while we looked)."""
        meta = self.metadata(version)
        if not meta:
            return None
        # The arrays are whatever the version was published with (a sequence model adds some).
        array_names = [field[len(CHUNKS):] for field in meta if field.startswith(CHUNKS)]
        names = [(name, i) for name in array_names for i in range(int(meta[CHUNKS + name]))]
        values = self.client.mget([self.keys.model_array(version, f"{n}:{i}") for n, i in names])
        if any(v is None for v in values):
            return None
        arrays = {name: b"".join(v for (n, _), v in zip(names, values) if n == name) for name in array_names}
        return NextTitleModel.from_payload(arrays, meta)

    @translate_failures
    def prune(self) -> list[int]:
        """Delete versions beyond the newest ``models_kept`` (never the current one) and any
        keys left by a publish that did not finish."""
        current = self.current_version()
        registered = self.versions()
        keep = set(registered[-self.models_kept :]) | {current}
        removed = [v for v in registered if v not in keep]
        for version in removed:
            self.client.zrem(self.keys.model_registry, str(version))
        in_flight = int(self.client.get(self.keys.model_sequence) or 0)
        for key in self.client.scan_iter(match=self.keys.model_pattern(), count=1000):
            version = self.keys.model_version_of(key.decode())
            if version is None or version in keep or (version not in registered and version >= in_flight):
                continue  # kept, or possibly still being written by another publisher
            self.client.unlink(key)
        return removed


class ModelSwitches:
    """Versions announced by ``activate``/``rollback``/``publish``, as they come."""

    def __init__(self, pubsub):
        self._pubsub = pubsub

    @translate_failures
    def next_version(self, timeout: float) -> int | None:
        """The version of the next switch announced within ``timeout`` seconds, else None."""
        message = self._pubsub.get_message(timeout=timeout)
        if message is None or message.get("type") != "message":
            return None
        try:
            return int(message["data"])
        except (TypeError, ValueError):
            return None

    def close(self) -> None:
        try:
            self._pubsub.close()
        except Exception:  # noqa: BLE001 - closing a broken connection must not raise
            pass
