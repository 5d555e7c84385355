"""POST /impressions: titles shown to a user, validated, idempotent, logged; frequency capping
(a title shown NEXTWATCH_IMPRESSION_CAP times without a watch is demoted for the user); the live
hit rate per impression; bounded memory per user; impressions never train the model."""

from __future__ import annotations

import time

import pytest

from conftest import ON_BOTH_TOPOLOGIES, scrape
from nextwatch.store.user_state import MAX_IMPRESSIONS, decode_state

pytestmark = ON_BOTH_TOPOLOGIES


def show(client, user, titles, **extra):
    return client.post("/impressions", json={"user_id": user, "content_ids": titles, **extra})


def impressions_of(store, user):
    return decode_state(store.client.get(store.keys.user(user)))[1]


def test_impressions_are_counted_and_logged_once_per_event_id(client, store, published):
    before = scrape(client).get("impressions_shown_total", 0)
    first = show(client, "U1", ["C1045", "C005", "C1045"], event_id="page-1")
    assert first.status_code == 200
    assert first.get_json() == {"user_id": "U1", "shown": 2, "demoted": []}
    assert show(client, "U1", ["C1045", "C005"], event_id="page-1").get_json() == first.get_json()
    rows = impressions_of(store, "U1")
    codes = store.catalog.register(["C1045", "C005"])
    assert sorted(rows[:, 0].tolist()) == sorted(codes) and rows[:, 1].tolist() == [1, 1]
    logged = [e for e in store.events.read_all() if e["kind"] == "impression"]
    assert sorted(e["content_id"] for e in logged) == ["C005", "C1045"]  # the retry logged nothing
    assert scrape(client)["impressions_shown_total"] - before == 2


@pytest.mark.parametrize("body, error", [
    ({"user_id": "U1"}, "missing_field"),
    ({"user_id": "U1", "content_ids": []}, "invalid_content_ids"),
    ({"user_id": "U1", "content_ids": "C1"}, "invalid_content_ids"),
    ({"user_id": "U1", "content_ids": ["C1"] * 101}, "invalid_content_ids"),
    ({"user_id": "U1", "content_ids": ["bad id"]}, "invalid_content_id"),
    ({"user_id": "U 1", "content_ids": ["C1"]}, "invalid_user_id"),
    ({"user_id": "U1", "content_ids": ["C1"], "event_id": None}, "invalid_event_id"),
])
def test_bad_impressions_are_refused_and_change_nothing(client, store, redis_client, published, body, error):
    answer = client.post("/impressions", json=body)
    assert answer.status_code == 400 and answer.get_json()["error"] == error
    assert store.users.read("U1").history.size == 0 and impressions_of(store, "U1").size == 0
    assert not [e for e in store.events.read_all() if e["kind"] == "impression"]


def test_a_title_shown_too_often_is_demoted_and_a_watch_forgets_it(client, store, settings, published):
    client.post("/watched", json={"user_id": "U2", "content_id": "C1010"})  # predicts C1045
    assert client.get("/recommend/U2").get_json()["recommendation"] == "C1045"
    for page in range(settings.impression_cap):
        answer = show(client, "U2", ["C1045"]).get_json()
    assert answer["demoted"] == ["C1045"]
    now = time.time()
    assert store.catalog.register(["C1045"])[0] in store.users.read("U2").demoted(now).tolist()
    demoted = client.get("/recommend/U2?k=3").get_json()
    assert "C1045" not in demoted["recommendations"][:2] and demoted["recommendation"] != "C1045"
    # Watching it anyway forgets its impressions: it is watched, no longer only shown.
    client.post("/watched", json={"user_id": "U2", "content_id": "C1045"})
    assert store.catalog.register(["C1045"])[0] not in impressions_of(store, "U2")[:, 0].tolist()


def test_a_watch_of_a_title_shown_lately_is_a_hit_of_the_impression(client, published):
    before = scrape(client)
    show(client, "U3", ["C1045", "C005"])
    client.post("/watched", json={"user_id": "U3", "content_id": "C1045"})  # shown: a hit
    client.post("/watched", json={"user_id": "U3", "content_id": "C006"})  # never shown
    after = scrape(client)
    assert after["impressions_shown_total"] - before.get("impressions_shown_total", 0) == 2
    assert after["impression_hits_total"] - before.get("impression_hits_total", 0) == 1


def test_watches_and_impressions_keep_their_event_ids_apart(client, published):
    watched = client.post("/watched", json={"user_id": "U8", "content_id": "C1010", "event_id": "1"}).get_json()
    shown = show(client, "U8", ["C005"], event_id="1").get_json()
    assert shown == {"user_id": "U8", "shown": 1, "demoted": []}
    again = client.post("/watched", json={"user_id": "U8", "content_id": "C1010", "event_id": "1"}).get_json()
    assert again == watched


def test_memory_per_user_is_bounded(client, store, published):
    titles = [f"C{i:03d}" for i in range(100, 100 + 3 * MAX_IMPRESSIONS)]
    for start in range(0, len(titles), 5):
        show(client, "U4", titles[start:start + 5])
    rows = impressions_of(store, "U4")
    assert len(rows) == MAX_IMPRESSIONS
    kept = set(rows[:, 0].tolist())
    assert kept == set(store.catalog.register(titles[-MAX_IMPRESSIONS:]))  # the most recently shown


def test_impressions_never_reach_training(settings, store, spark, tmp_path, client, published):
    from nextwatch.training.job import train

    codes = dict(zip(["A", "B", "C"], store.catalog.register(["A", "B", "C"])))
    for offset, title in enumerate(["A", "B", "C"]):
        store.users.record_watch("U5", title, codes[title], 1000.0 + offset, None)
    show(client, "U5", ["A", "B", "C", "C1045"])
    result = train(settings, store, spark, sources=[], include_event_log=True, model="transitions")
    assert result.events == 3
