"""The API on a real Redis Cluster (3 masters, 3 replicas on loopback) under faults: a master
SIGKILLed under load, slots moved under load, writes that wait for replicas, and start-up with a
cluster that cannot serve.

The API runs as `nextwatch serve` (granian, 2 workers). Client threads send watches, each with
a unique event_id, and reads; a refused watch (503) is sent again after its Retry-After, as a
client that keeps its events does. At the end every accepted watch must be in the event log
exactly once (read through the store, shard by shard, as training reads it)."""

from __future__ import annotations

import collections
import subprocess
import sys
import threading
import time

import pytest
import requests

from conftest import DEFAULT_NEIGHBOURS, ON_BOTH_TOPOLOGIES, publish_test_model
from nextwatch.local_processes.redis_server import RedisServer, free_port
from nextwatch.local_processes.supervisor import Supervisor, http_ok
from nextwatch.settings import Settings, SettingsError
from nextwatch.store import Store

ON_CLUSTER = pytest.mark.parametrize("topology", ["cluster"], indirect=True)


def serve(settings: Settings, supervisor: Supervisor, **variables) -> str:
    port = free_port()
    env = {"NEXTWATCH_REDIS_URL": settings.redis_url, "NEXTWATCH_KEY_PREFIX": settings.key_prefix,
           "NEXTWATCH_REDIS_TIMEOUT": "0.5", **{f"NEXTWATCH_{k.upper()}": str(v) for k, v in variables.items()}}
    supervisor.start("api", [sys.executable, "-m", "nextwatch.cli", "serve", "--port", str(port), "--workers", "2"],
                     env, ready=http_ok(f"http://127.0.0.1:{port}/readyz"), timeout=90)
    return f"http://127.0.0.1:{port}"


class Load:
    """Client threads: watches with unique event ids (retried until accepted) and reads.
    Records what was accepted, every status seen, and the longest time without a 2xx."""

    def __init__(self, base: str, threads: int = 3, users: int = 300):
        self.base, self.threads, self.users = base, threads, users
        self.accepted: set[str] = set()
        self.statuses: collections.Counter = collections.Counter()
        self.bad: list[str] = []  # answers that break the promises (5xx other than 503, 503 without Retry-After)
        self.successes: list[float] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def __enter__(self):
        self.started = time.monotonic()
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)

    def _run(self, number: int) -> None:
        session = requests.Session()
        sent = 0
        while not self._stop.is_set():
            user = f"U{(number * 7919 + sent) % self.users}"
            event_id = f"t{number}-{sent}"
            sent += 1
            self._watch(session, user, event_id)
            self._answer(session.get(f"{self.base}/recommend/{user}", timeout=10), read=True)

    def _watch(self, session, user: str, event_id: str) -> None:
        body = {"user_id": user, "content_id": "C1010", "event_id": event_id}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                response = session.post(f"{self.base}/watched", json=body, timeout=10)
            except requests.RequestException:
                time.sleep(0.2)
                continue
            if self._answer(response, read=False):
                with self._lock:
                    self.accepted.add(event_id)
                return
            retry = response.headers.get("Retry-After")
            time.sleep(min(float(retry or 1), 1.0) if response.status_code in (409, 503) else 0.2)
        with self._lock:
            self.bad.append(f"watch {event_id} never accepted within 60 s")

    def _answer(self, response, read: bool) -> bool:
        with self._lock:
            self.statuses[(("GET" if read else "POST"), response.status_code)] += 1
            if response.status_code < 300:
                self.successes.append(time.monotonic())
                return True
            if response.status_code == 503 and not read and "Retry-After" in response.headers:
                return False
            if response.status_code == 409 and not read:
                return False
            self.bad.append(f"{'GET' if read else 'POST'} {response.status_code} {response.text[:200]}")
            return False

    def longest_gap(self) -> float:
        times = sorted(self.successes)
        return max((b - a for a, b in zip(times, times[1:])), default=float("inf"))


def recorded_event_ids(settings: Settings) -> collections.Counter:
    store = Store.from_settings(settings)
    try:
        return collections.Counter(event["event_id"] for event in store.events.read_all() if event["event_id"])
    finally:
        store.close()


@ON_CLUSTER
def test_a_master_killed_under_load_loses_no_accepted_watch_with_wait(settings, store, clean_cluster):
    """NEXTWATCH_WRITE_REPLICAS=1: a watch is answered 2xx only once a replica holds it, so the
    replica promoted after a SIGKILL of its master has every accepted watch."""
    publish_test_model(store, DEFAULT_NEIGHBOURS)
    supervisor = Supervisor()
    try:
        base = serve(settings, supervisor, write_replicas=1, write_replicas_timeout=0.3)
        victim = clean_cluster.master_for_key(store.keys.user("U1"))
        with Load(base) as load:
            time.sleep(3)
            killed_at = time.monotonic()
            clean_cluster.kill(victim)
            promoted = clean_cluster.wait_for_failover(victim.slots[0][0])
            failover_seconds = time.monotonic() - killed_at
            time.sleep(2)
            # The promoted master has no replica until the old one comes back: its watches are
            # refused (503 replicas_behind) rather than accepted unprotected. Back it comes:
            clean_cluster.restart(victim)
            time.sleep(4)  # serving must recover by itself
        recorded = recorded_event_ids(settings)
        print(f"failover {failover_seconds:.1f} s (new master {promoted.port}); longest gap without a 2xx "
              f"{load.longest_gap():.2f} s; answers {dict(load.statuses)}")
        assert not load.bad, load.bad[:5]
        assert len(load.accepted) > 20
        lost = load.accepted - set(recorded)
        assert not lost, f"{len(lost)} accepted watches lost: {sorted(lost)[:5]}"
        assert all(count == 1 for count in recorded.values()), "a watch was recorded twice"
        assert set(recorded) == load.accepted  # nothing recorded that was not (in the end) accepted
        # Serving recovered: the last seconds had answers, watches included.
        assert load.successes[-1] > killed_at + failover_seconds
        assert requests.post(f"{base}/watched", json={"user_id": "U1", "content_id": "C005"}, timeout=5).ok
    finally:
        supervisor.stop_all()


@ON_CLUSTER
def test_slots_moved_under_load_give_no_error_beyond_503s(settings, store, clean_cluster):
    publish_test_model(store, DEFAULT_NEIGHBOURS)
    supervisor = Supervisor()
    try:
        base = serve(settings, supervisor)
        masters = [node for node in clean_cluster.nodes() if node.role == "master"]
        with Load(base) as load:
            time.sleep(2)
            moved = clean_cluster.reshard(masters[0], masters[1], 500)
            moved_back = clean_cluster.reshard(masters[1], masters[0], 500)
            time.sleep(2)
        print(f"moved {len(moved)} slots and {len(moved_back)} back; longest gap {load.longest_gap():.2f} s; "
              f"answers {dict(load.statuses)}")
        assert not load.bad, load.bad[:5]
        recorded = recorded_event_ids(settings)
        assert set(recorded) == load.accepted and all(count == 1 for count in recorded.values())
    finally:
        supervisor.stop_all()


@ON_CLUSTER
def test_a_write_waits_for_its_replicas(settings, store, clean_cluster):
    from nextwatch.api import create_app

    publish_test_model(store, DEFAULT_NEIGHBOURS)
    durable = create_app(settings.with_overrides(write_replicas=1, write_replicas_timeout_seconds=0.5)).test_client()
    answer = durable.post("/watched", json={"user_id": "U1", "content_id": "C1010", "event_id": "e1"})
    assert answer.status_code == 200 and answer.get_json()["predicted_next"] == "C1045"
    # More replicas than the cluster has: recorded on the master, but refused as not yet safe;
    # the retry with the same event id is recorded once (and still refused while they lack).
    strict = create_app(settings.with_overrides(write_replicas=2, write_replicas_timeout_seconds=0.05)).test_client()
    for _ in range(2):
        refused = strict.post("/watched", json={"user_id": "U2", "content_id": "C1010", "event_id": "e2"})
        assert refused.status_code == 503 and refused.get_json()["error"] == "replicas_behind"
        assert refused.headers["Retry-After"] == "1"
    assert recorded_event_ids(settings) == {"e1": 1, "e2": 1}


@pytest.mark.parametrize("topology", ["single"], indirect=True)
def test_on_one_redis_without_replicas_a_durable_write_is_refused(settings, store):
    from nextwatch.api import create_app

    publish_test_model(store, DEFAULT_NEIGHBOURS)
    client = create_app(settings.with_overrides(write_replicas=1, write_replicas_timeout_seconds=0.05)).test_client()
    refused = client.post("/watched", json={"user_id": "U1", "content_id": "C1010"})
    assert refused.status_code == 503 and refused.get_json()["error"] == "replicas_behind"


def test_a_cluster_url_that_cannot_serve_stops_start_up_with_the_reason(tmp_path):
    unreachable = f"redis+cluster://127.0.0.1:{free_port()}"
    result = subprocess.run([sys.executable, "-m", "nextwatch.cli", "serve", "--redis-url", unreachable],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "cannot use it as a Redis Cluster" in result.stderr, result.stderr
    result = subprocess.run([sys.executable, "-m", "nextwatch.cli", "serve", "--redis-url", "redis+cluster://nowhere"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "host:port" in result.stderr, result.stderr

    # A cluster node that owns only some slots: one node, cluster mode on, slots 0-99.
    from nextwatch.local_processes.cluster_processes import pick_port_pair

    node = RedisServer(tmp_path / "partial", port=pick_port_pair(set()), persistent=False,
                       extra_args=["--cluster-enabled", "yes"]).start()
    try:
        import redis

        redis.Redis.from_url(node.url).execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 99)
        url = f"redis+cluster://127.0.0.1:{node.port}"
        with pytest.raises(SettingsError, match="100 of 16384"):
            Store.from_settings(Settings(redis_url=url))
    finally:
        node.stop()


@ON_BOTH_TOPOLOGIES
def test_another_shard_count_is_refused(settings, store):
    store.users.record_watch("U1", "C1", 0, 1.0, None)
    with pytest.raises(SettingsError, match="written with 64 shards"):
        Store.from_settings(settings.with_overrides(shards=16))
    Store.from_settings(settings).close()  # the recorded count is fine
