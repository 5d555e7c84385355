"""The HTTP contract, field by field, on a real Redis with a known model."""

import time

import pytest

from conftest import ON_BOTH_TOPOLOGIES, DEFAULT_NEIGHBOURS, publish_test_model, scrape

pytestmark = ON_BOTH_TOPOLOGIES  # one Redis and a Redis Cluster alike


def test_watch_then_recommend_then_fallback(client, published):
    watched = client.post("/watched", json={"user_id": "U999", "content_id": "C1010"})
    assert watched.status_code == 200
    body = watched.get_json()
    assert body["user_id"] == "U999"
    assert body["watched"] == "C1010"
    assert body["predicted_next"] == "C1045"  # the strongest neighbour of C1010
    assert body["model_version"] == published

    again = client.get("/recommend/U999")
    assert again.status_code == 200
    body = again.get_json()
    assert body["user_id"] == "U999"
    assert body["recommendation"] == "C1045"
    assert body["cache_hit"] is True
    assert body["fallback_used"] is False

    new_user = client.get("/recommend/U1234").get_json()
    assert new_user == {
        "user_id": "U1234",
        "recommendation": "C000",
        "cache_hit": False,
        "fallback_used": True,
        "model_version": published,
        "source": "popular",
    }


def test_metrics_has_the_contract_counters(client, published):
    before = scrape(client)
    client.post("/watched", json={"user_id": "U999", "content_id": "C1010"})
    client.get("/recommend/U999")
    client.get("/recommend/U1234")
    after = scrape(client)
    assert after["cache_hits_total"] - before.get("cache_hits_total", 0) == 1
    assert after["cache_misses_total"] - before.get("cache_misses_total", 0) == 1
    key = 'fallbacks_used_total{step="popular"}'
    assert after[key] - before.get(key, 0) == 1
    assert after["model_version"] == published


def test_watched_titles_are_never_recommended(client, published):
    for title in ["C000", "C1045", "C1010"]:
        client.post("/watched", json={"user_id": "U7", "content_id": title})
    body = client.get("/recommend/U7?k=20").get_json()
    assert not {"C000", "C1045", "C1010"} & set(body["recommendations"])
    # C1046 = 0.9 x 0.6 (from C1045, one step back) beats C1011 = 0.3 x 1.0 (from C1010)
    assert body["recommendations"][:2] == ["C1046", "C1011"]


def test_more_recent_titles_weigh_more(client, published):
    client.post("/watched", json={"user_id": "U8", "content_id": "C005"})
    body = client.post("/watched", json={"user_id": "U8", "content_id": "C1045"}).get_json()
    assert body["predicted_next"] == "C1046"  # from the latest title, not C006 from the earlier one
    body = client.post("/watched", json={"user_id": "U9", "content_id": "C1045"}).get_json()
    body = client.post("/watched", json={"user_id": "U9", "content_id": "C005"}).get_json()
    assert body["predicted_next"] == "C006"


def test_k_adds_a_list_and_is_bounded(client, published):
    client.post("/watched", json={"user_id": "U1", "content_id": "C1010"})
    body = client.get("/recommend/U1?k=3").get_json()
    assert body["recommendations"] == ["C1045", "C1011", "C000"]
    body = client.get("/recommend/U1?k=50").get_json()
    assert len(body["recommendations"]) == 50 and len(set(body["recommendations"])) == 50
    for bad in ["0", "101", "x", "-1", "1.5"]:
        answer = client.get(f"/recommend/U1?k={bad}")
        assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_k"


def test_cache_is_invalidated_by_a_new_watch(client, published):
    client.post("/watched", json={"user_id": "U2", "content_id": "C1010"})
    assert client.get("/recommend/U2").get_json()["cache_hit"] is True
    client.post("/watched", json={"user_id": "U2", "content_id": "C1045"})
    body = client.get("/recommend/U2").get_json()
    assert body["recommendation"] == "C1046"
    assert body["cache_hit"] is True  # the watch itself cached the new prediction


def test_cache_never_outlives_a_new_model_version(client, store, published):
    client.post("/watched", json={"user_id": "U3", "content_id": "C1010"})
    assert client.get("/recommend/U3").get_json()["recommendation"] == "C1045"
    newer = publish_test_model(store, {"C1010": [("C777", 1.0)]})
    body = client.get("/recommend/U3").get_json()
    assert body["cache_hit"] is False
    assert body["recommendation"] == "C777"
    assert body["model_version"] == newer
    assert client.get("/recommend/U3").get_json()["cache_hit"] is True


def test_a_stale_cache_entry_is_not_served_when_the_history_changed(client, store, published):
    """Two racing watches can leave a prediction computed from an older history; the
    fingerprint of the history in the cache entry catches it."""
    from nextwatch.store.user_state import decode_state, encode_codes, encode_state

    client.post("/watched", json={"user_id": "U4", "content_id": "C1010"})
    _, _, stale = decode_state(store.client.get(store.keys.user("U4")))
    client.post("/watched", json={"user_id": "U4", "content_id": "C1045"})
    history, _, _ = decode_state(store.client.get(store.keys.user("U4")))
    # The older prediction beside the newer history, as a lost race could leave it.
    store.client.set(store.keys.user("U4"), encode_state(history, encode_codes([stale.stamp, *stale.codes])))
    body = client.get("/recommend/U4").get_json()
    assert body["cache_hit"] is False and body["recommendation"] == "C1046"


def test_without_a_model_the_catalog_first_title_is_the_fallback(client, store):
    store.catalog.save_info([{"content_id": "C000", "name": "First"}, {"content_id": "C001", "name": "Second"}])
    body = client.get("/recommend/U1234").get_json()
    assert body["recommendation"] == "C000"
    assert body["fallback_used"] is True and body["source"] == "catalog" and body["model_version"] == 0
    watched = client.post("/watched", json={"user_id": "U5", "content_id": "C000"}).get_json()
    assert watched["predicted_next"] == "C001"  # the first title the user has not watched


def test_popular_fallback_skips_watched_titles_for_users_without_model_rows(client, store):
    publish_test_model(store, {})
    body = client.post("/watched", json={"user_id": "U6", "content_id": "C000"}).get_json()
    assert body["predicted_next"] == "C001"
    assert body["source"] == "model"  # the model scored it (by popularity alone)


def test_history_is_bounded(client, store, settings, published):
    for i in range(settings.history_length + 7):
        client.post("/watched", json={"user_id": "U10", "content_id": f"C{i:03d}"})
    history = store.users.read("U10").history
    assert len(history) == settings.history_length
    assert store.catalog.all_ids()[int(history[-1])] == f"C{settings.history_length + 6:03d}"


def test_every_watch_reaches_the_event_log(client, store, published):
    for title in ["C001", "C002", "C001"]:
        client.post("/watched", json={"user_id": "U11", "content_id": title})
    events = list(store.events.read_all())
    assert [(e["user_id"], e["content_id"]) for e in events] == [("U11", "C001"), ("U11", "C002"), ("U11", "C001")]
    assert all(events[i]["timestamp"] <= events[i + 1]["timestamp"] for i in range(2))


def test_prediction_hits_count_watches_that_were_predicted(client, published):
    before = scrape(client)
    client.post("/watched", json={"user_id": "U12", "content_id": "C1010"})  # predicts C1045, C1011 ...
    client.post("/watched", json={"user_id": "U12", "content_id": "C1011"})  # in the top-k: a hit
    client.post("/watched", json={"user_id": "U12", "content_id": "C900"})  # not predicted
    after = scrape(client)
    assert after["prediction_hits_total"] - before.get("prediction_hits_total", 0) == 1
    assert after["watch_events_total"] - before.get("watch_events_total", 0) == 3


def test_same_event_id_is_recorded_once_and_answered_the_same(client, store, published):
    event = {"user_id": "U13", "content_id": "C1010", "event_id": "evt-1"}
    first = client.post("/watched", json=event).get_json()
    second = client.post("/watched", json=event).get_json()
    assert first == second
    assert store.events.length() == 1
    assert len(store.users.read("U13").history) == 1


def test_new_titles_are_registered_on_first_watch(client, store, published):
    body = client.post("/watched", json={"user_id": "U14", "content_id": "brand-new-title"}).get_json()
    assert body["predicted_next"] == "C000"  # unknown to the model: popular titles
    assert "brand-new-title" in store.catalog.all_ids()


def test_health_and_readiness(client, store):
    assert client.get("/healthz").status_code == 200
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503 and "no model" in not_ready.get_json()["detail"]
    publish_test_model(store, DEFAULT_NEIGHBOURS)
    assert client.get("/readyz").status_code == 200


@pytest.fixture(scope="module")
def trained_blend():
    """A table and a sequence network trained (PyTorch, a few seconds) on titles C000..C029 that
    viewers step through by a stride of their own, blended with λ 4: a model whose blended
    answer often differs from the table's."""
    import numpy as np

    from nextwatch.evaluation.baselines import decayed_transition_model
    from nextwatch.model import NextTitleModel
    from nextwatch.training.sequence_training import SequenceOptions, train_sequence_model

    rng = np.random.default_rng(11)
    histories = []
    for _ in range(400):
        stride, start, length = rng.integers(1, 4), rng.integers(0, 30), rng.integers(4, 12)
        histories.append((start + stride * np.arange(length)) % 30)
    table = decayed_transition_model(histories, 30).model()
    network, _ = train_sequence_model(histories, 30, SequenceOptions(dim=16, blocks=2, dropout=0.0, max_length=12,
                                                                     seed=3), epochs=8)
    blend = NextTitleModel(table.popularity, table.neighbour_offsets, table.neighbour_codes, table.neighbour_scores,
                           weights=table.weights, popularity_weight=table.popularity_weight, sequence=network,
                           sequence_weight=4.0)
    return blend, table


def test_with_the_sequence_model_the_watch_answers_what_the_next_get_returns(client, store, trained_blend):
    """The seed's step 3 with the blend on: for 100 viewers who each watch 2 to 6 titles,
    `predicted_next` of the last watch is exactly what GET /recommend answers from cache, at
    once and a moment later (nothing replaces it behind the answer's back)."""
    blend, table = trained_blend
    import random

    titles = [f"C{i:03d}" for i in range(30)]
    assert store.catalog.register(titles) == list(range(30))
    store.models.publish(blend)
    chooser = random.Random(5)
    answers, differs_from_table = {}, 0
    for viewer in range(100):
        user, start, stride = f"V{viewer}", chooser.randrange(30), chooser.randrange(1, 4)
        for step in range(chooser.randrange(2, 7)):
            watched = client.post("/watched", json={"user_id": user, "content_id": titles[(start + stride * step) % 30]})
            assert watched.status_code == 200
        answers[user] = watched.get_json()["predicted_next"]
        assert client.get(f"/recommend/{user}").get_json() == {
            "user_id": user, "recommendation": answers[user], "cache_hit": True, "fallback_used": False,
            "model_version": watched.get_json()["model_version"], "source": "cache"}
        history = store.users.read(user).history
        differs_from_table += blend.recommend(history, 1) != table.recommend(history, 1)
    assert differs_from_table > 0  # the network changes answers, so the check means something
    time.sleep(0.5)
    for user, predicted in answers.items():
        assert client.get(f"/recommend/{user}").get_json()["recommendation"] == predicted
