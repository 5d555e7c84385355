"""Every kind of bad input gets a JSON 4xx naming the rule, and leaves Redis exactly as it was."""

import pytest

from conftest import ON_BOTH_TOPOLOGIES

pytestmark = ON_BOTH_TOPOLOGIES  # one Redis and a Redis Cluster alike


def redis_snapshot(redis_client):
    """Every key with its type and value, to compare before and after a request."""
    snapshot = {}
    for key in redis_client.scan_iter(count=1000):
        kind = redis_client.type(key)
        if kind == b"string":
            value = redis_client.get(key)
        elif kind == b"hash":
            value = redis_client.hgetall(key)
        elif kind == b"stream":
            value = redis_client.xrange(key)
        elif kind == b"zset":
            value = redis_client.zrange(key, 0, -1, withscores=True)
        else:
            value = kind
        snapshot[key] = value
    return snapshot


LONG_ID = "U" * 129
BAD_WATCHES = [
    # (description, request kwargs, status, error)
    ("missing user_id", dict(json={"content_id": "C1"}), 400, "missing_field"),
    ("missing content_id", dict(json={"user_id": "U1"}), 400, "missing_field"),
    ("numeric user_id", dict(json={"user_id": 5, "content_id": "C1"}), 400, "invalid_user_id"),
    ("null content_id", dict(json={"user_id": "U1", "content_id": None}), 400, "invalid_content_id"),
    ("empty user_id", dict(json={"user_id": "", "content_id": "C1"}), 400, "invalid_user_id"),
    ("id too long", dict(json={"user_id": LONG_ID, "content_id": "C1"}), 400, "invalid_user_id"),
    ("space in id", dict(json={"user_id": "U 1", "content_id": "C1"}), 400, "invalid_user_id"),
    ("brace in id", dict(json={"user_id": "U}{1", "content_id": "C1"}), 400, "invalid_user_id"),
    ("unicode in id", dict(json={"user_id": "Ü1", "content_id": "C1"}), 400, "invalid_user_id"),
    ("bad event_id", dict(json={"user_id": "U1", "content_id": "C1", "event_id": "a b"}), 400, "invalid_event_id"),
    ("malformed JSON", dict(data='{"user_id": ', content_type="application/json"), 400, "malformed_json"),
    ("not UTF-8", dict(data=b"\xff\xfe", content_type="application/json"), 400, "malformed_json"),
    ("a list body", dict(json=["U1", "C1"]), 400, "not_an_object"),
    ("a string body", dict(json="U1"), 400, "not_an_object"),
    ("wrong content type", dict(data='{"user_id":"U1","content_id":"C1"}', content_type="text/plain"), 415,
     "unsupported_media_type"),
    ("no content type", dict(data='{"user_id":"U1","content_id":"C1"}'), 415, "unsupported_media_type"),
    ("body over 64 KiB", dict(json={"user_id": "U1", "content_id": "C1", "pad": "x" * 70_000}), 413,
     "body_too_large"),
    ("bad k", dict(json={"user_id": "U1", "content_id": "C1"}, query_string={"k": "0"}), 400, "invalid_k"),
]


@pytest.mark.parametrize("description,request_kwargs,status,error", BAD_WATCHES, ids=[b[0] for b in BAD_WATCHES])
def test_bad_watch_is_refused_and_changes_nothing(client, redis_client, published, description, request_kwargs,
                                                  status, error):
    client.post("/watched", json={"user_id": "U1", "content_id": "C1010"})  # some state to keep
    before = redis_snapshot(redis_client)
    response = client.post("/watched", **request_kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == error
    assert body["detail"]
    assert redis_snapshot(redis_client) == before


@pytest.mark.parametrize("path,status,error", [
    ("/recommend/U%20x", 400, "invalid_user_id"),
    ("/recommend/" + LONG_ID, 400, "invalid_user_id"),
    ("/recommend/U1?k=abc", 400, "invalid_k"),
    ("/recommend/", 404, "not_found"),
    ("/recommend/a/b", 404, "not_found"),
    ("/no-such-route", 404, "not_found"),
])
def test_bad_reads_are_refused_and_change_nothing(client, redis_client, published, path, status, error):
    before = redis_snapshot(redis_client)
    response = client.get(path)
    assert response.status_code == status
    assert response.get_json()["error"] == error
    assert redis_snapshot(redis_client) == before


def test_wrong_method_is_a_json_405(client):
    response = client.get("/watched")
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]
    assert client.delete("/recommend/U1").status_code == 405


@pytest.mark.parametrize("first", ["a small request", "the oversized one"])
def test_headers_over_the_limit_in_all_are_a_json_431_and_change_nothing(client, redis_client, published, first):
    """The limit is on all headers together: forty of 450 bytes each (18 KB) are refused though
    none is long, thirty (13.5 KB) pass; whichever request comes first to a new app, and even
    when an earlier request sent the same header names with short values."""
    many = {f"X-Extra-{i}": "v" * 450 for i in range(40)}
    fewer = dict(list(many.items())[:30])
    if first == "a small request":
        assert client.get("/recommend/U1", headers={name: "v" for name in many}).status_code == 200
    before = redis_snapshot(redis_client)
    refused = client.post("/watched", json={"user_id": "U1", "content_id": "C1010"}, headers=many)
    assert refused.status_code == 431 and refused.get_json()["error"] == "headers_too_large"
    assert client.get("/recommend/U1", headers=many).status_code == 431
    assert redis_snapshot(redis_client) == before
    assert client.post("/watched", json={"user_id": "U1", "content_id": "C1010"}, headers=fewer).status_code == 200
