"""The consumer's Redis side on a real redis-server: a Redis that goes away surfaces as
StoreUnavailable from every call, also from the event log's generator while it is being read,
and `nextwatch archive --once` then exits 1 having written nothing twice."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nextwatch.errors import StoreUnavailable
from nextwatch.local_processes.redis_server import RedisServer
from nextwatch.settings import Settings
from nextwatch.store import Store
from nextwatch.store.event_consumer import EventConsumer


def test_every_call_raises_store_unavailable_once_redis_is_gone(tmp_path):
    server = RedisServer(tmp_path / "redis", persistent=False).start()
    settings = Settings(redis_url=server.url, key_prefix="nwtest", redis_timeout_seconds=0.3)
    store = Store.from_settings(settings)
    consumer = EventConsumer(store.client, store.keys, "archiver", "archiver")
    try:
        code = store.catalog.register(["T1"])[0]
        for i in range(30):  # one user: one shard, read back in pages of 5
            store.users.record_watch("U1", "T1", code, 1795000000.0 + i, None)
        assert len(consumer.ensure_groups()) == store.keys.shards
        events = store.events.read_all(batch=5)
        assert next(events)["user_id"] == "U1"
        server.stop()
        with pytest.raises(StoreUnavailable):
            list(events)  # the next page fails while the caller iterates
        calls = [consumer.ensure_groups, consumer.claim_orphans, lambda: consumer.read_pending({0: "0", 1: "0"}, 10),
                 lambda: consumer.read_new([0, 1], 10), lambda: consumer.ack({0: ["1-0"]}), consumer.newest_ids,
                 consumer.lag, store.events.length]
        for call in calls:
            with pytest.raises(StoreUnavailable):
                call()
    finally:
        store.close()
        server.stop()


def test_archive_once_exits_1_when_redis_cannot_be_reached(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTWATCH_")}
    env.update(NEXTWATCH_REDIS_URL="redis://127.0.0.1:1/0", NEXTWATCH_REDIS_TIMEOUT="0.3",
               NEXTWATCH_ARCHIVE_DIR=str(tmp_path / "archive"))
    result = subprocess.run([sys.executable, "-m", "nextwatch.cli", "archive", "--once"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Redis is unreachable (Redis is unreachable: ConnectionError); stopping" in result.stderr
    assert "Traceback" not in result.stderr
