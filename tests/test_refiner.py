"""`nextwatch refine` against a real redis-server: a watch caches the table's answer at once,
the refiner replaces it with the sequence model's blend, GET /recommend serves the blend from
cache; a refinement of an older history or model never replaces a newer entry; a model without a
sequence part is left alone; Redis restarts, FLUSHALL, pending entries and SIGTERM are survived."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import DEFAULT_NEIGHBOURS, TITLES, publish_test_model
from nextwatch.api import create_app
from nextwatch.model.sequence import SequenceModel
from nextwatch.refining import Refiner, run_refine
from nextwatch.service import LoadedModel
from nextwatch.settings import Settings
from nextwatch.store import Store
from nextwatch.store.event_consumer import EventConsumer, read_group_lag
from nextwatch.store.users import RefinedPrediction
from test_layers import PACKAGE, imports_of

K = 10  # the settings fixture's cache_top_k


def publish_with_sequence(store) -> int:
    # Weight 1.0 and seed 0: the neighbours still lead, but the sequence model reorders the
    # popular titles that fill the rest of the top 10 (asserted where it matters).
    return publish_test_model(store, DEFAULT_NEIGHBOURS, sequence=SequenceModel.random(len(TITLES), seed=0),
                              sequence_weight=1.0)


def ids(codes) -> list[str]:
    return [TITLES[code] for code in codes]  # publish_test_model registers TITLES in code order


def answers(store, user_id: str) -> tuple[list[str], list[str]]:
    """The published model's (table answer, blended answer) for the user's history now."""
    model = store.models.load(store.models.current_version())
    history = store.users.read(user_id).history
    return ids(model.recommend(history, K, with_sequence=False)), ids(model.recommend(history, K))


def cached(store, user_id: str) -> list[str] | None:
    """The cached top-k, if it is valid for the user's history and model now."""
    state = store.users.read(user_id)
    if state.cached is None or not state.cached.is_valid_for(state.model_version, state.history):
        return None
    return ids(state.cached.codes)


def pending(store, group: str = "refiner") -> int:
    return read_group_lag(store.client, store.keys, group).pending


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# ---- the path of one watch -------------------------------------------------------------------

def test_the_refiner_caches_the_blend_that_get_recommend_then_serves(settings, store, client):
    publish_with_sequence(store)
    watched = client.post("/watched", json={"user_id": "U1", "content_id": "C1010"}).get_json()
    table, blended = answers(store, "U1")
    assert table != blended  # else this test could not tell the two apart
    assert watched["predicted_next"] == table[0] == "C1045"
    assert cached(store, "U1") == table  # POST /watched cached the cheap answer

    stats = run_refine(settings, once=True)

    assert (stats.events, stats.refined, stats.stale, stats.ok) == (1, 1, 0, True)
    assert cached(store, "U1") == blended
    served = client.get(f"/recommend/U1?k={K}").get_json()
    assert served["cache_hit"] is True and served["source"] == "cache"
    assert served["recommendations"] == blended
    assert pending(store) == 0
    assert store.client.ttl(store.keys.prediction("U1")) > settings.cache_ttl_seconds - 60


def test_each_user_is_scored_once_per_batch_with_the_newest_history(settings, store, client):
    publish_with_sequence(store)
    for content_id in ("C1010", "C1045", "C005"):
        client.post("/watched", json={"user_id": "U1", "content_id": content_id})
    client.post("/watched", json={"user_id": "U2", "content_id": "C1010"})

    stats = run_refine(settings, once=True)

    assert (stats.events, stats.refined, stats.stale) == (4, 2, 0)  # two users, one write each
    for user_id in ("U1", "U2"):
        assert cached(store, user_id) == answers(store, user_id)[1]


# ---- never over a newer entry ----------------------------------------------------------------

def test_save_refined_writes_only_for_the_history_and_model_it_was_scored_with(settings, store, client):
    version = publish_with_sequence(store)
    client.post("/watched", json={"user_id": "U1", "content_id": "C1010"})
    older = store.users.read("U1").history
    client.post("/watched", json={"user_id": "U1", "content_id": "C1045"})  # caches the table's answer
    newer = store.users.read("U1").history
    key = store.keys.prediction("U1")
    entry = store.client.get(key)
    refinement = [9, 8, 7]

    assert store.users.save_refined(version, [RefinedPrediction("U1", older, refinement)]) == [False]
    assert store.client.get(key) == entry  # the newer watch's answer stays
    assert store.users.save_refined(version + 1, [RefinedPrediction("U1", newer, refinement)]) == [False]
    assert store.client.get(key) == entry  # scored with a model that is not the current one
    assert store.users.save_refined(version, [RefinedPrediction("U9", older, refinement)]) == [False]
    assert store.client.get(store.keys.prediction("U9")) is None  # a user without that history

    store.client.script_flush()  # as after a Redis restart: the script is loaded again
    written = store.users.save_refined(version, [RefinedPrediction("U1", older, [1, 2]),
                                                 RefinedPrediction("U1", newer, refinement)])
    assert written == [False, True]  # one round trip, each checked on its own
    assert cached(store, "U1") == ids(refinement)
    assert 0 < store.client.ttl(key) <= settings.cache_ttl_seconds


class WatchArrivesBeforeTheWrite(Refiner):
    """Makes the race real and certain: a watch of the same user is recorded through the API
    after the refiner read the history and scored it, before it writes."""

    def __init__(self, *args, client, **kwargs):
        super().__init__(*args, **kwargs)
        self.client = client
        self.raced = False

    def _score(self, model, users, histories):
        refined = super()._score(model, users, histories)
        if not self.raced:
            self.raced = True
            self.client.post("/watched", json={"user_id": "U1", "content_id": "C1045"})
        return refined


def test_a_watch_that_arrives_while_the_refiner_scores_keeps_its_answer(settings, store, client):
    publish_with_sequence(store)
    client.post("/watched", json={"user_id": "U1", "content_id": "C1010"})
    consumer = EventConsumer.from_settings(settings, "refiner", "refiner", block_seconds=1.0)
    refiner = WatchArrivesBeforeTheWrite(consumer, store, LoadedModel(store), top_k=K, batch_size=1,
                                         client=client)
    try:
        stats = refiner.run(once=True)
    finally:
        consumer.close()
    # Batch 1 scored the history before the race and was refused; batch 2 (the racing watch's
    # event, in the log after --once began) is left for the next run.
    assert (stats.events, stats.refined, stats.stale) == (1, 0, 1)
    table, blended = answers(store, "U1")
    assert cached(store, "U1") == table  # the newer watch's own answer, not the stale refinement

    again = run_refine(settings, once=True)
    assert (again.events, again.refined) == (1, 1)
    assert cached(store, "U1") == blended


# ---- nothing to refine -----------------------------------------------------------------------

def test_a_model_without_a_sequence_part_is_acknowledged_and_left_alone(settings, store, published, client):
    client.post("/watched", json={"user_id": "U1", "content_id": "C1010"})
    key = store.keys.prediction("U1")
    entry, ttl = store.client.get(key), store.client.pttl(key)
    time.sleep(0.01)

    stats = run_refine(settings, once=True)

    assert (stats.events, stats.refined, stats.stale, stats.skipped) == (1, 0, 0, 1)
    # Not written again: a write would have set the TTL afresh (the same bytes, for this model).
    assert store.client.get(key) == entry and store.client.pttl(key) < ttl
    assert pending(store) == 0


def test_no_model_and_old_or_unreadable_entries_are_acknowledged(settings, store, client):
    client.post("/watched", json={"user_id": "U1", "content_id": "C1010"})  # no model published yet
    store.client.xadd(store.keys.event_log, {"user_id": "U2", "content_id": "C1", "ts": "0"})  # 1970
    store.client.xadd(store.keys.event_log, {"garbage": "1"})

    stats = run_refine(settings, once=True)

    assert (stats.events, stats.refined, stats.skipped) == (3, 0, 3)
    assert pending(store) == 0


# ---- start, stop, failures -------------------------------------------------------------------

def test_entries_left_pending_by_a_crash_are_refined_first(settings, store, client):
    publish_with_sequence(store)
    client.post("/watched", json={"user_id": "U1", "content_id": "C1010"})
    crashed = EventConsumer.from_settings(settings, "refiner", "old-name", block_seconds=1.0)
    crashed.ensure_group()
    assert len(crashed.read_new(10, None)) == 1  # delivered, never acknowledged
    crashed.close()
    assert pending(store) == 1

    stats = run_refine(settings, once=True)

    assert (stats.events, stats.refined) == (1, 1)
    assert cached(store, "U1") == answers(store, "U1")[1]
    assert pending(store) == 0


def run_in_thread(settings: Settings, store: Store) -> tuple[Refiner, threading.Thread, EventConsumer]:
    consumer = EventConsumer.from_settings(settings, "refiner", "refiner", block_seconds=1.0)
    refiner = Refiner(consumer, store, LoadedModel(store), top_k=K)
    thread = threading.Thread(target=refiner.run, daemon=True)
    thread.start()
    return refiner, thread, consumer


def stop_thread(refiner: Refiner, thread: threading.Thread, consumer: EventConsumer) -> None:
    refiner.stop()
    thread.join(15)
    consumer.close()
    assert not thread.is_alive()


def test_the_refiner_carries_on_after_a_redis_restart(private_redis):
    # The default timeout: a refused connection is noticed at once anyway, and a shorter one
    # turns slow replies on a busy machine into outages whose backoff outlasts the wait below.
    settings = Settings(redis_url=private_redis.url, key_prefix="nwtest")
    store = Store.from_settings(settings)
    publish_with_sequence(store)
    client = create_app(settings, store).test_client()
    refiner, thread, consumer = run_in_thread(settings, store)
    try:
        client.post("/watched", json={"user_id": "U1", "content_id": "C1010"})
        wait_for(lambda: cached(store, "U1") == answers(store, "U1")[1])

        private_redis.stop()  # SIGTERM: the AOF keeps the data, not the loaded scripts
        time.sleep(1.5)  # the refiner meets the outage and backs off
        assert thread.is_alive()
        private_redis.start()

        assert client.post("/watched", json={"user_id": "U1", "content_id": "C1045"}).status_code == 200
        wait_for(lambda: cached(store, "U1") == answers(store, "U1")[1], timeout=40)  # backoff at most 30 s
        assert refiner.stats.refined >= 2  # 3 if the first batch's XACK was lost with Redis: refined again
    finally:
        stop_thread(refiner, thread, consumer)
        store.close()


def test_the_refiner_creates_its_group_again_after_flushall(settings, store, client):
    publish_with_sequence(store)
    refiner, thread, consumer = run_in_thread(settings, store)
    try:
        client.post("/watched", json={"user_id": "U1", "content_id": "C1010"})
        wait_for(lambda: refiner.stats.refined == 1)
        store.client.flushall()
        publish_with_sequence(store)
        client.post("/watched", json={"user_id": "U2", "content_id": "C1010"})
        wait_for(lambda: cached(store, "U2") == answers(store, "U2")[1])
    finally:
        stop_thread(refiner, thread, consumer)


def test_a_watch_does_not_replace_a_blend_the_refiner_wrote_before_the_watch_cached_its_answer(
        settings, store, client, monkeypatch):
    """The refiner can read an event and write its blend between the two round trips of the
    watch (record, then cache): the watch's table answer must not replace that blend."""
    publish_with_sequence(store)
    save_prediction = store.users.save_prediction.__func__

    def refine_first(users, *args, **kwargs):  # runs the refiner just before the watch caches
        run_refine(settings, once=True)
        return save_prediction(users, *args, **kwargs)

    monkeypatch.setattr(type(store.users), "save_prediction", refine_first)
    watched = client.post("/watched", json={"user_id": "U7", "content_id": "C1010"}).get_json()
    table, blended = answers(store, "U7")
    assert watched["predicted_next"] == table[0] and table != blended
    assert cached(store, "U7") == blended


# ---- the command -----------------------------------------------------------------------------

def cli_env(settings: Settings) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTWATCH_")}
    env.update(NEXTWATCH_REDIS_URL=settings.redis_url, NEXTWATCH_KEY_PREFIX=settings.key_prefix)
    return env


def test_the_command_drains_the_log_once(settings, store, client):
    publish_with_sequence(store)
    client.post("/watched", json={"user_id": "U1", "content_id": "C1010"})
    result = subprocess.run([sys.executable, "-m", "nextwatch.cli", "refine", "--once", "--batch", "7"],
                            env=cli_env(settings), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1 events: 1 predictions refined, 0 stale, 0 skipped"
    assert cached(store, "U1") == answers(store, "U1")[1]


def test_the_command_stops_cleanly_on_sigterm(settings, store):
    process = subprocess.Popen([sys.executable, "-m", "nextwatch.cli", "refine"], env=cli_env(settings),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Started once its group exists and its blocking read waits for events.
        wait_for(lambda: read_group_lag(store.client, store.keys, "refiner").exists, timeout=60)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "0 events" in stdout


@pytest.mark.parametrize("batch", ["0", "many"])
def test_a_bad_batch_is_refused_with_the_rule(batch):
    result = subprocess.run([sys.executable, "-m", "nextwatch.cli", "refine", "--batch", batch],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "argument --batch: must be" in result.stderr


def test_only_the_refine_command_imports_the_refiner():
    importers = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                 if any(name.startswith("nextwatch.refining") for name in imports_of(path))
                 and path.relative_to(PACKAGE).parts[0] != "refining"}
    assert importers == {"commands/refine.py"}
