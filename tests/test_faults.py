"""Redis going away and coming back: reads degrade to the in-process model, writes answer 503
with Retry-After, and serving recovers by itself once Redis is back."""


from conftest import DEFAULT_NEIGHBOURS, publish_test_model
from nextwatch.api import create_app
from nextwatch.settings import Settings
from nextwatch.store import Store


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


def test_a_process_without_a_model_answers_503_not_500(tmp_path):
    settings = Settings(redis_url="redis://127.0.0.1:1/0", redis_timeout_seconds=0.2)
    client = create_app(settings, Store.from_settings(settings)).test_client()
    response = client.get("/recommend/U1")
    assert response.status_code == 503 and response.get_json()["error"] == "store_unavailable"
