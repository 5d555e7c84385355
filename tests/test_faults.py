"""Redis going away and coming back: reads degrade to the in-process model, writes answer 503
with Retry-After, and serving recovers by itself once Redis is back; a watch recorded just as
Redis went away is answered on retry; the archiver misses nothing a lost reply delivered.
(tests/test_fault_load.py does the same under load with real processes.)"""

import threading
import time

import pyarrow.parquet as pq

from conftest import DEFAULT_NEIGHBOURS, publish_test_model
from nextwatch.api import create_app
from nextwatch.archiving import ArchiveFolder, Archiver, read_group_lag
from nextwatch.settings import Settings
from nextwatch.store import Store
from nextwatch.store.event_consumer import EventConsumer


def test_redis_restart(private_redis):
    settings = Settings(redis_url=private_redis.url, redis_timeout_seconds=0.3)
    store = Store.from_settings(settings)
    publish_test_model(store, DEFAULT_NEIGHBOURS)
    client = create_app(settings, store).test_client()
    assert client.post("/watched", json={"user_id": "U1", "content_id": "C1010"}).status_code == 200
    assert client.get("/recommend/U1").get_json()["recommendation"] == "C1045"

    private_redis.stop()
    read = client.get("/recommend/U1")
    assert read.status_code == 200
    body = read.get_json()
    assert body["degraded"] is True and body["fallback_used"] is True and body["recommendation"] == "C000"
    write = client.post("/watched", json={"user_id": "U1", "content_id": "C1045"})
    assert write.status_code == 503
    assert write.get_json()["error"] == "store_unavailable"
    assert int(write.headers["Retry-After"]) > 0
    assert client.get("/readyz").status_code == 503

    private_redis.start()  # same port, same data folder: the AOF brings the state back
    assert client.get("/recommend/U1").get_json() == {
        "user_id": "U1", "recommendation": "C1045", "cache_hit": True, "fallback_used": False,
        "model_version": 1, "source": "cache",
    }
    assert client.post("/watched", json={"user_id": "U1", "content_id": "C1045"}).get_json()["predicted_next"] == "C1046"
    assert store.events.length() == 2  # both accepted events survived the restart
    # The restarted Redis had forgotten the scripts: the prediction was cached all the same.
    after = client.get("/recommend/U1").get_json()
    assert (after["recommendation"], after["cache_hit"]) == ("C1046", True)


def test_a_process_without_a_model_answers_503_not_500(tmp_path):
    settings = Settings(redis_url="redis://127.0.0.1:1/0", redis_timeout_seconds=0.2)
    client = create_app(settings, Store.from_settings(settings)).test_client()
    response = client.get("/recommend/U1")
    assert response.status_code == 503 and response.get_json()["error"] == "store_unavailable"


def test_a_recorded_watch_whose_answer_was_never_stored_is_answered_on_retry(settings, store, published, client):
    """Redis (or the worker) went away between the watch script and storing the answer: the
    event is recorded, its event id claimed, no answer stored. A retry used to get 409
    `event_in_flight` for the whole event-id TTL; now, once the claim is clearly orphaned, it
    gets the answer the first request would have given, and the event stays recorded once."""
    twin = client.post("/watched?k=3", json={"user_id": "U2", "content_id": "C1010"}).get_json()

    code = store.catalog.register(["C1010"])[0]
    store.users.record_watch("U1", "C1010", code, time.time(), "e1", published)  # the claim of a live request
    in_flight = client.post("/watched?k=3", json={"user_id": "U1", "content_id": "C1010", "event_id": "e1"})
    assert in_flight.status_code == 409 and in_flight.headers["Retry-After"] == "1"

    store.users.record_watch("U1", "C1010", code, time.time() - 10, "e2", published)  # a request that died
    retried = client.post("/watched?k=3", json={"user_id": "U1", "content_id": "C1010", "event_id": "e2"})
    assert retried.status_code == 200
    assert retried.get_json() == {**twin, "user_id": "U1"}  # what the first request would have said
    again = client.post("/watched?k=3", json={"user_id": "U1", "content_id": "C1010", "event_id": "e2"})
    assert again.get_json() == retried.get_json()
    # e2 once (U1 and U2 may be in different shards: read_all goes shard by shard)
    assert sorted(e["event_id"] or "" for e in store.events.read_all()) == ["", "e1", "e2"]


def test_the_archiver_reads_entries_whose_reply_never_reached_it(private_redis, tmp_path, caplog):
    """A read of new entries makes them pending at the archiver's consumer whether or not the
    reply arrives, and redis-py sends a command again on a fresh connection when one drops, so
    a lost reply can pass unnoticed. Here an entry is delivered to the archiver's consumer name
    behind its back (XADD and XREADGROUP in one MULTI, so the archiver cannot read it first), as
    such a lost reply would leave it: the archiver finds it by the pending count that follows
    each read, reads the pending entries again and archives it (it used to wait for a restart,
    and the stream's cap could trim the entry first)."""
    out = tmp_path / "archive"
    config = Settings(redis_url=private_redis.url, redis_timeout_seconds=0.3)
    store = Store.from_settings(config)
    consumer = EventConsumer.from_settings(config, "archiver", "archiver")
    archiver = Archiver(consumer, ArchiveFolder(out), flush_seconds=0.2)
    thread = threading.Thread(target=archiver.run)
    try:
        thread.start()
        wait_for(lambda: read_group_lag(store.client, store.keys, "archiver").exists)
        stream = store.keys.user_event_log("U1")
        behind_its_back = store.client.pipeline(transaction=True)
        behind_its_back.xadd(stream, {"user_id": "U1", "content_id": "C1", "ts": "1795000000.5"})
        behind_its_back.xreadgroup("archiver", "archiver", {stream: ">"})
        assert len(behind_its_back.execute()[1][0][1]) == 1  # delivered to consumer "archiver"
        wait_for(lambda: len(list(out.glob("day=*/*.parquet"))) == 1)
        rows = pq.read_table(next(out.glob("day=*/*.parquet"))).to_pylist()
        assert [(r["user_id"], r["content_id"], r["shard"]) for r in rows] == [("U1", "C1", store.keys.shard_of("U1"))]
        wait_for(lambda: read_group_lag(store.client, store.keys, "archiver").pending == 0)
        assert "without reaching it" in caplog.text
    finally:
        archiver.stop()
        thread.join(10)
        consumer.close()
        store.close()


def wait_for(condition, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
