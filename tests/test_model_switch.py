"""How serving processes learn that the model version changed (service/serving_model.py): the
announcement on the switch channel at once, the poll of the pointer as a back-up, and on a
real cluster, readers that never see a cached prediction outlive the switch nor a mix of two
models."""

from __future__ import annotations

import sys
import threading
import time

import requests

from conftest import DEFAULT_NEIGHBOURS, ON_BOTH_TOPOLOGIES, publish_test_model
from nextwatch.local_processes.redis_server import free_port
from nextwatch.local_processes.supervisor import Supervisor, http_ok
from nextwatch.service.serving_model import ServingModel
from nextwatch.store import Store

pytestmark = ON_BOTH_TOPOLOGIES
SECOND = {"C1010": [("C1011", 0.9), ("C1045", 0.1)]}  # the next model sends C1010's viewers elsewhere


def wait_until(condition, timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.01)
    return time.monotonic() - started


def test_a_switch_is_learned_from_its_announcement(settings, store):
    first = publish_test_model(store, DEFAULT_NEIGHBOURS)
    serving = ServingModel(Store.from_settings(settings), refresh_seconds=3600)  # the poll never fires
    try:
        assert serving.version() == first
        wait_until(lambda: serving._listener is not None and serving._listener.is_alive(), 5)
        time.sleep(0.5)  # subscribed
        second = publish_test_model(store, SECOND)
        took = wait_until(lambda: serving.version() == second, 5)
        store.models.rollback()
        wait_until(lambda: serving.version() == first, 5)
        print(f"announcement learned in {took * 1000:.0f} ms")
    finally:
        serving.close()
        serving.store.close()


def test_a_switch_without_announcement_is_learned_by_the_poll(settings, store):
    first = publish_test_model(store, DEFAULT_NEIGHBOURS)
    second = publish_test_model(store, SECOND)
    store.models.activate(first)
    serving = ServingModel(Store.from_settings(settings), refresh_seconds=0.2)
    try:
        assert serving.version() == first
        store.client.set(store.keys.current_model, second)  # as if the message were lost
        took = wait_until(lambda: serving.version() == second, 5)
        assert took < 1.5
    finally:
        serving.close()
        serving.store.close()


def test_readers_never_see_the_old_model_after_the_switch_reached_them(settings, store):
    """The API (2 workers, the default refresh) serves a viewer of C1010 while the model is
    switched: every answer is the prediction of the version it names (no mix, no stale cache
    stamped with the other version), and soon after the switch every answer names the new one."""
    first = publish_test_model(store, DEFAULT_NEIGHBOURS)
    port = free_port()
    supervisor = Supervisor()
    env = {"NEXTWATCH_REDIS_URL": settings.redis_url, "NEXTWATCH_KEY_PREFIX": settings.key_prefix}
    supervisor.start("api", [sys.executable, "-m", "nextwatch.cli", "serve", "--port", str(port), "--workers", "2"],
                     env, ready=http_ok(f"http://127.0.0.1:{port}/readyz"), timeout=90)
    base = f"http://127.0.0.1:{port}"
    try:
        for user in ("V1", "V2", "V3"):
            assert requests.post(f"{base}/watched", json={"user_id": user, "content_id": "C1010"},
                                 timeout=5).json()["predicted_next"] == "C1045"
        expected = {first: "C1045"}
        answers: list[tuple[float, int, str, bool]] = []
        stop = threading.Event()

        def read():
            session = requests.Session()
            while not stop.is_set():
                for user in ("V1", "V2", "V3"):
                    got = session.get(f"{base}/recommend/{user}", timeout=5).json()
                    answers.append((time.monotonic(), got["model_version"], got["recommendation"], got["cache_hit"]))

        readers = [threading.Thread(target=read) for _ in range(2)]
        for reader in readers:
            reader.start()
        time.sleep(1)
        second = publish_test_model(store, SECOND)  # publish switches the current version
        expected[second] = "C1011"
        switched = time.monotonic()
        time.sleep(2.5)
        stop.set()
        for reader in readers:
            reader.join()
        mixed = [a for a in answers if expected[a[1]] != a[2]]
        assert not mixed, mixed[:5]
        late = [a for a in answers if a[0] > switched + 1.0 and a[1] != second]
        assert not late, late[:5]  # every worker learned the switch within a second
        assert any(a[1] == first for a in answers) and any(a[1] == second and a[3] for a in answers)
        last_old = max((a[0] for a in answers if a[1] == first), default=switched)
        print(f"{len(answers)} answers; the last of the old version {1000 * (last_old - switched):.0f} ms "
              "after the switch")
    finally:
        supervisor.stop_all()
