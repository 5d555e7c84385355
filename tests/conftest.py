"""Real services for the tests: a private redis-server on a free port (flushed between tests),
a real Redis Cluster of six redis-server processes (healed and flushed between tests) and a
local-mode Spark session. A service that will not start fails the suite; nothing skips."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import redis
import redis.cluster

from nextwatch.local_processes.redis_cluster import LocalRedisCluster
from nextwatch.local_processes.redis_server import RedisServer
from nextwatch.settings import Settings

# Spark must stay on loopback: left alone it binds to the machine's outside address.
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
# Training takes the table alone unless a test asks for the sequence model (test_sequence_model,
# test_sequence_training): minutes of PyTorch on every small training run would buy nothing.
os.environ.setdefault("NEXTWATCH_SEQUENCE_MODEL", "off")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"), persistent=False).start()
    yield server
    server.stop()


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of the test's own (AOF on), for tests that stop, restart or starve it."""
    server = RedisServer(tmp_path / "private-redis", persistent=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """One Redis Cluster (3 masters, 3 replicas, AOF off) for the whole session: starting one
    per test would cost seconds each. Use it through ``clean_cluster``.

    Its nodes live in /dev/shm where there is one: every slot a reshard moves makes each node
    fsync its nodes.conf, and on this shared, busy disk that made a reshard 2-3 times slower
    (1000 slots: 3.7-5.3 s in /tmp, 1.6 s in /dev/shm)."""
    memory = Path("/dev/shm")
    in_memory = memory.is_dir() and os.access(memory, os.W_OK)
    folder = Path(tempfile.mkdtemp(prefix="nextwatch-test-cluster-", dir=memory)) if in_memory \
        else tmp_path_factory.mktemp("redis-cluster")
    cluster = LocalRedisCluster(folder)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        if in_memory:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def clean_cluster(redis_cluster):
    """The session's cluster, healthy and empty. A test may kill, restart or reshard nodes:
    afterwards this fixture restarts what is down and restores 3 masters with a replica each,
    so the next test starts from the same shape (a test that broke it beyond repair errors here)."""
    redis_cluster.wait_until_healthy()
    redis_cluster.flushall()
    yield redis_cluster
    redis_cluster.wait_until_healthy()


def cluster_client(cluster: LocalRedisCluster, **options) -> redis.cluster.RedisCluster:
    """A redis-py cluster client for ``cluster``, built the way the service builds its own:
    from the ``redis+cluster://`` URL, with the store's retries and slot-coverage check."""
    from nextwatch.store.connection import connect_cluster

    return connect_cluster(cluster.url, **options)


@pytest.fixture
def redis_cluster_client(clean_cluster):
    client = cluster_client(clean_cluster)
    yield client
    client.close()


TOPOLOGIES = ("single", "cluster")
# A test module runs on both topologies with:  pytestmark = ON_BOTH_TOPOLOGIES
ON_BOTH_TOPOLOGIES = pytest.mark.parametrize("topology", TOPOLOGIES, indirect=True)


@pytest.fixture
def topology(request) -> str:
    """Where the test's Redis state lives: "single" (one redis-server, the default) or "cluster"
    (the session's Redis Cluster, 3 masters and 3 replicas) for modules that ask for both."""
    return getattr(request, "param", "single")


@pytest.fixture
def redis_url(topology, request) -> str:
    if topology == "cluster":
        return request.getfixturevalue("clean_cluster").url
    return request.getfixturevalue("redis_server").url


@pytest.fixture
def settings(redis_url) -> Settings:
    # model_refresh_seconds=0: an in-process app reads the current model version on every
    # request, so a test that publishes a model and asks at once needs no wait for the switch
    # announcement (tests/test_model_switch.py covers the announcement and the poll).
    return Settings(redis_url=redis_url, key_prefix="nwtest", history_length=50, cache_top_k=10,
                    sequence_model="off", model_refresh_seconds=0)


@pytest.fixture
def redis_client(topology, request, settings):
    """A plain client of the test's Redis (a cluster client on the cluster), emptied before and
    after the test."""
    if topology == "cluster":
        # clean_cluster empties (and heals) the cluster before each test; after one that killed
        # or moved nodes this client's slot map may be stale, so it does not flush on the way out.
        client = cluster_client(request.getfixturevalue("clean_cluster"))
        yield client
        client.close()
        return
    client = redis.Redis.from_url(settings.redis_url)
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture
def store(settings, redis_client):
    from nextwatch.store import Store

    store = Store.from_settings(settings)
    yield store
    store.close()


@pytest.fixture(scope="session")
def spark():
    from nextwatch.training.spark import spark_session

    session = spark_session("local[2]", app_name="nextwatch-tests")
    yield session
    session.stop()


TITLES = [f"C{i:03d}" for i in range(1100)]


def publish_test_model(store, neighbours: dict[str, list[tuple[str, float]]] | None = None, **options) -> int:
    """Register C000..C1099 (C000 first, so it has code 0) and publish a model whose
    popularity falls with the id and whose neighbour table is ``neighbours`` (ids, not codes)."""
    import numpy as np

    from nextwatch.model import NextTitleModel

    codes = dict(zip(TITLES, store.catalog.register(TITLES)))
    popularity = np.linspace(1.0, 0.01, len(TITLES))
    table = {
        codes[source]: [(codes[target], score) for target, score in row]
        for source, row in (neighbours or {}).items()
    }
    return store.models.publish(NextTitleModel.from_neighbour_lists(popularity, table, **options))


DEFAULT_NEIGHBOURS = {
    "C1010": [("C1045", 0.6), ("C1011", 0.3), ("C000", 0.1)],
    "C1045": [("C1046", 0.9), ("C1010", 0.1)],
    "C005": [("C006", 1.0)],
}


@pytest.fixture
def published(store):
    """The version of a small known model, published."""
    return publish_test_model(store, DEFAULT_NEIGHBOURS)


@pytest.fixture
def client(settings, store):
    from nextwatch.api import create_app

    app = create_app(settings, store)
    app.testing = True
    return app.test_client()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{label="v"}': value} (labels sorted), with real parsing."""
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def scrape(client) -> dict[str, float]:
    return parse_metrics(client.get("/metrics").get_data(as_text=True))
