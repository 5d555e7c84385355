"""API keys, the model registry routes, the per-key rate limit, Redis running out of memory, and
that no client input reaches a Redis key name unvalidated."""

import hashlib
import logging
import os
import secrets
import subprocess
import sys
import time

import pytest
import redis

from conftest import ON_BOTH_TOPOLOGIES, DEFAULT_NEIGHBOURS, publish_test_model
from nextwatch.api import create_app
from nextwatch.service.access import issue_key, validate_key_name
from nextwatch.errors import InvalidInput
from nextwatch.ids import validate_id
from nextwatch.keys import Keys
from nextwatch.settings import Settings
from nextwatch.store import Store

WATCH = {"user_id": "U1", "content_id": "C1010"}


def app_client(settings, store, **overrides):
    app = create_app(settings.with_overrides(**overrides), store)
    app.testing = True
    return app.test_client()


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def commands_run(redis_client, command: str) -> int:
    stats = redis_client.info("commandstats").get(f"cmdstat_{command}")
    return stats["calls"] if stats else 0


# -- keys ------------------------------------------------------------------------------------------
def test_without_keys_the_api_is_open(client, published):
    assert client.post("/watched", json=WATCH).status_code == 200
    assert client.get("/admin/models").status_code == 200
    assert client.post("/admin/models/rollback").status_code == 409  # reached the route: one version only


def test_missing_and_invalid_keys_answer_401(store, settings, published):
    issue_key(store, "app", "write")
    client = app_client(settings, store)
    for headers, error in [({}, "missing_api_key"), ({"Authorization": "Basic dXNlcjpwdw=="}, "missing_api_key"),
                           (bearer("not-a-key"), "invalid_api_key"), ({"X-API-Key": "not-a-key"}, "invalid_api_key")]:
        response = client.post("/watched", json=WATCH, headers=headers)
        assert response.status_code == 401, headers
        assert response.get_json()["error"] == error
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        admin = client.get("/admin/models", headers=headers)
        assert admin.status_code == 401 and admin.get_json()["error"] == error
    assert store.events.length() == 0  # nothing was written


def test_bearer_and_x_api_key_both_work_and_reads_stay_open(store, settings, published):
    key = issue_key(store, "app", "write")
    client = app_client(settings, store)
    assert client.post("/watched", json=WATCH, headers=bearer(key)).status_code == 200
    assert client.post("/watched", json=WATCH, headers={"Authorization": f"bearer {key}"}).status_code == 200
    assert client.post("/watched", json=WATCH, headers={"X-API-Key": key}).status_code == 200
    for path in ("/recommend/U1", "/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_a_write_key_is_refused_on_admin_routes_and_an_admin_key_may_write(store, settings, published):
    writer, admin = issue_key(store, "app", "write"), issue_key(store, "ops", "admin")
    client = app_client(settings, store)
    for method, url in [("GET", "/admin/models"), ("POST", "/admin/models/rollback"),
                        ("POST", f"/admin/models/{published}/activate")]:
        refused = client.open(url, method=method, headers=bearer(writer))
        assert refused.status_code == 403 and refused.get_json()["error"] == "forbidden"
    assert client.get("/admin/models", headers=bearer(admin)).status_code == 200
    assert client.post("/watched", json=WATCH, headers={"X-API-Key": admin}).status_code == 200


@ON_BOTH_TOPOLOGIES
def test_adding_and_revoking_keys_takes_effect_without_a_restart(store, settings, published):
    client = app_client(settings, store, api_keys_refresh_seconds=0.2)
    assert client.post("/watched", json=WATCH).status_code == 200  # open: no key yet
    key = issue_key(store, "app", "write")
    time.sleep(0.3)
    assert client.post("/watched", json=WATCH).status_code == 401  # a key exists now: closed
    assert client.post("/watched", json=WATCH, headers=bearer(key)).status_code == 200
    assert store.api_keys.revoke("app")
    time.sleep(0.3)
    response = client.post("/watched", json=WATCH, headers=bearer(key))
    assert response.status_code == 200  # no key is left: open again, as documented
    other = issue_key(store, "other", "write")
    time.sleep(0.3)
    assert client.post("/watched", json=WATCH, headers=bearer(key)).get_json()["error"] == "invalid_api_key"
    assert client.post("/watched", json=WATCH, headers=bearer(other)).status_code == 200


def test_revoked_key_is_refused_while_others_remain(store, settings, published):
    client = app_client(settings, store, api_keys_refresh_seconds=0.2)
    gone, kept = issue_key(store, "gone", "write"), issue_key(store, "kept", "write")
    assert client.post("/watched", json=WATCH, headers=bearer(gone)).status_code == 200
    store.api_keys.revoke("gone")
    time.sleep(0.3)
    assert client.post("/watched", json=WATCH, headers=bearer(gone)).status_code == 401
    assert client.post("/watched", json=WATCH, headers=bearer(kept)).status_code == 200


def test_requests_cost_no_redis_round_trip_for_the_keys_between_refreshes(store, settings, redis_client, published):
    key = issue_key(store, "app", "write")
    client = app_client(settings, store, api_keys_refresh_seconds=60)
    assert client.post("/watched", json=WATCH, headers=bearer(key)).status_code == 200  # first read
    before = commands_run(redis_client, "hgetall")
    for _ in range(50):
        assert client.post("/watched", json=WATCH, headers=bearer(key)).status_code == 200
    assert commands_run(redis_client, "hgetall") == before
    assert redis_client.keys("*ratelimit*") == []  # no limit set: no bucket is touched


def assert_stored_nowhere(redis_client, key: str) -> None:
    """No key name, string or hash field or value in Redis holds ``key``."""
    for name in redis_client.scan_iter():
        kind = redis_client.type(name)
        values = {b"string": lambda: [redis_client.get(name)],
                  b"hash": lambda: [*redis_client.hkeys(name), *redis_client.hvals(name)]}.get(kind, lambda: [])()
        assert key.encode() not in name and all(key.encode() not in value for value in values)


def test_keys_are_stored_hashed_only(store, redis_client):
    key = issue_key(store, "app", "admin")
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert redis_client.hkeys(store.keys.api_keys) == [digest.encode()]
    assert_stored_nowhere(redis_client, key)


def test_keys_never_reach_answers_or_logs(store, settings, published, caplog):
    key = issue_key(store, "app", "write")
    client = app_client(settings, store)
    with caplog.at_level(logging.DEBUG):
        answers = [client.post("/watched", json=WATCH, headers=bearer(key + "x")),
                   client.get("/admin/models", headers=bearer(key)),
                   client.post("/watched", data="{", content_type="application/json", headers=bearer(key))]
    assert [a.status_code for a in answers] == [401, 403, 400]
    for answer in answers:
        assert key not in answer.get_data(as_text=True) and key not in str(answer.headers)
    assert key not in caplog.text


def cli(settings, *args, env=None, stdin=None):
    # PYTHONPATH too: the subprocess must import the nextwatch under test, not another checkout's.
    base = {name: os.environ[name] for name in ("PATH", "PYTHONPATH", "HOME") if name in os.environ}
    base.update({"NEXTWATCH_REDIS_URL": settings.redis_url, "NEXTWATCH_KEY_PREFIX": settings.key_prefix})
    return subprocess.run([sys.executable, "-m", "nextwatch.cli", *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, input=stdin, timeout=60)


@ON_BOTH_TOPOLOGIES
def test_keys_cli_add_list_revoke(store, settings, redis_client, published):
    added = cli(settings, "keys", "add", "mobile-app", "--role", "write")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert len(key) >= 40 and "\n" not in key and "shown only this once" in added.stderr
    client = app_client(settings, store)
    assert client.post("/watched", json=WATCH, headers={"X-API-Key": key}).status_code == 200

    assert cli(settings, "keys", "add", "ops", "--role", "admin").returncode == 0
    listed = cli(settings, "keys", "list")
    assert listed.returncode == 0
    assert "mobile-app" in listed.stdout and "write" in listed.stdout and "admin" in listed.stdout
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert key not in listed.stdout and digest not in listed.stdout and digest[:8] in listed.stdout

    duplicate = cli(settings, "keys", "add", "mobile-app", "--role", "admin")
    assert duplicate.returncode == 1 and "exists" in duplicate.stderr
    for bad in ("a:b", "{x}", "has space", "x" * 65):
        refused = cli(settings, "keys", "add", bad, "--role", "write")
        assert refused.returncode == 2 and "1-64 characters" in refused.stderr, bad
    assert len(redis_client.hkeys(store.keys.api_keys)) == 2

    assert cli(settings, "keys", "revoke", "mobile-app").returncode == 0
    assert cli(settings, "keys", "revoke", "mobile-app").returncode == 1
    assert "mobile-app" not in cli(settings, "keys", "list").stdout
    fresh = app_client(settings, store)
    assert fresh.post("/watched", json=WATCH, headers={"X-API-Key": key}).status_code == 401


@ON_BOTH_TOPOLOGIES
def test_keys_cli_stores_a_given_key_as_its_hash_only(store, settings, redis_client, published, tmp_path):
    """`keys add --from-env VAR` / `--key-file PATH`: the compose stack's keys from .env. Only the
    SHA-256 is stored, nothing of the key is printed, and running it again changes nothing."""
    admin = secrets.token_hex(32)
    added = cli(settings, "keys", "add", "ops", "--role", "admin", "--from-env", "OPS_KEY", env={"OPS_KEY": admin})
    assert added.returncode == 0, added.stderr
    assert "stored" in added.stdout and admin not in added.stdout + added.stderr
    assert redis_client.hkeys(store.keys.api_keys) == [hashlib.sha256(admin.encode()).hexdigest().encode()]
    assert_stored_nowhere(redis_client, admin)
    again = cli(settings, "keys", "add", "ops", "--role", "admin", "--from-env", "OPS_KEY", env={"OPS_KEY": admin})
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert len(redis_client.hkeys(store.keys.api_keys)) == 1

    writer = secrets.token_urlsafe(40)
    (tmp_path / "writer.key").write_text(writer + "\n")  # a trailing newline, as editors leave one
    from_file = cli(settings, "keys", "add", "app", "--role", "write", "--key-file", str(tmp_path / "writer.key"))
    assert from_file.returncode == 0, from_file.stderr
    client = app_client(settings, store)
    assert client.get("/admin/models", headers=bearer(admin)).status_code == 200
    assert client.post("/watched", json=WATCH, headers=bearer(writer)).status_code == 200
    assert client.get("/admin/models", headers=bearer(writer)).status_code == 403

    # Another key under a taken name: refused, unless --replace, which retires the old key.
    rotated = secrets.token_hex(32)
    taken = cli(settings, "keys", "add", "ops", "--role", "admin", "--key-file", "-", stdin=rotated)
    assert taken.returncode == 1 and "--replace" in taken.stderr
    replaced = cli(settings, "keys", "add", "ops", "--role", "admin", "--key-file", "-", "--replace", stdin=rotated)
    assert replaced.returncode == 0 and "replacing" in replaced.stdout and rotated not in replaced.stdout
    fresh = app_client(settings, store)
    assert fresh.get("/admin/models", headers=bearer(rotated)).status_code == 200
    assert fresh.get("/admin/models", headers=bearer(admin)).get_json()["error"] == "invalid_api_key"

    # One key, one name: storing it again under another name would rename it and change its role.
    twice = cli(settings, "keys", "add", "other", "--role", "admin", "--key-file", "-", stdin=writer)
    assert twice.returncode == 1 and "already stored under the name 'app'" in twice.stderr
    for bad in ("short", "x" * 31, "a" * 20 + " " + "b" * 20, "é" * 40):
        refused = cli(settings, "keys", "add", "bad", "--role", "write", "--key-file", "-", stdin=bad)
        assert refused.returncode == 2 and "32 to 256" in refused.stderr and bad not in refused.stderr, bad
    unset = cli(settings, "keys", "add", "bad", "--role", "write", "--from-env", "NEXTWATCH_TEST_UNSET_KEY")
    assert unset.returncode == 2 and "NEXTWATCH_TEST_UNSET_KEY is not set" in unset.stderr
    nothing_given = cli(settings, "keys", "add", "bad", "--role", "write", "--replace")
    assert nothing_given.returncode == 2 and "--replace needs --from-env or --key-file" in nothing_given.stderr
    assert sorted(record.name for record in store.api_keys.records()) == ["app", "ops"]


# -- the model registry ----------------------------------------------------------------------------
@ON_BOTH_TOPOLOGIES
def test_activate_and_rollback_change_what_recommend_serves(client, store):
    first = publish_test_model(store, {"C1010": [("C1011", 1.0)]})
    second = publish_test_model(store, DEFAULT_NEIGHBOURS)
    listed = client.get("/admin/models").get_json()
    assert listed["current"] == second
    assert [(v["version"], v["current"]) for v in listed["versions"]] == [(first, False), (second, True)]
    assert "trained_at" in listed["versions"][0]["metadata"]

    assert client.post("/watched", json=WATCH).get_json()["predicted_next"] == "C1045"
    assert client.get("/recommend/U1").get_json()["cache_hit"] is True

    assert client.post("/admin/models/rollback").get_json() == {"current": first, "previous": second}
    after = client.get("/recommend/U1").get_json()  # the cached prediction of version 2 is not served
    assert (after["cache_hit"], after["model_version"], after["recommendation"]) == (False, first, "C1011")
    assert client.get("/recommend/U1").get_json()["cache_hit"] is True  # recomputed and cached again

    nothing = client.post("/admin/models/rollback")
    assert nothing.status_code == 409 and nothing.get_json()["error"] == "nothing_to_roll_back"

    assert client.post(f"/admin/models/{second}/activate").get_json() == {"current": second, "previous": first}
    back = client.get("/recommend/U1").get_json()
    assert (back["cache_hit"], back["model_version"], back["recommendation"]) == (False, second, "C1045")
    unknown = client.post("/admin/models/99/activate")
    assert unknown.status_code == 404 and unknown.get_json()["error"] == "unknown_model_version"
    assert client.post("/admin/models/x1/activate").status_code == 400
    assert store.models.current_version() == second


def test_rollback_with_no_model_is_409(client):
    response = client.post("/admin/models/rollback")
    assert response.status_code == 409 and response.get_json()["error"] == "nothing_to_roll_back"


@ON_BOTH_TOPOLOGIES
def test_models_cli_uses_the_same_registry(store, settings):
    first = publish_test_model(store, DEFAULT_NEIGHBOURS)
    second = publish_test_model(store, DEFAULT_NEIGHBOURS)
    listed = cli(settings, "models", "list")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert any(line.startswith("*") and f" {second} " in line for line in lines)
    assert any(line.startswith(" ") and f" {first} " in line for line in lines[1:])
    rolled = cli(settings, "models", "rollback")
    assert rolled.returncode == 0 and store.models.current_version() == first
    again = cli(settings, "models", "rollback")
    assert again.returncode == 1 and "older than" in again.stderr
    assert cli(settings, "models", "activate", str(second)).returncode == 0
    assert store.models.current_version() == second
    assert cli(settings, "models", "activate", "99").returncode == 1


# -- rate limit ------------------------------------------------------------------------------------
def test_rate_limit_answers_429_after_the_burst_and_keys_are_independent(store, settings, redis_client, published):
    first, second = issue_key(store, "first", "write"), issue_key(store, "second", "write")
    client = app_client(settings, store, rate_limit=1.0, rate_limit_burst=2)
    assert [client.post("/watched", json=WATCH, headers=bearer(first)).status_code for _ in range(2)] == [200, 200]
    limited = client.post("/watched", json=WATCH, headers=bearer(first))
    assert limited.status_code == 429 and limited.get_json()["error"] == "rate_limited"
    retry_after = limited.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    assert client.post("/watched", json=WATCH, headers=bearer(second)).status_code == 200  # its own bucket
    bucket = store.keys.rate_limit("first")
    assert 0 < redis_client.pttl(bucket) <= 3000  # refill time (2 s) plus a second
    time.sleep(int(retry_after))
    assert client.post("/watched", json=WATCH, headers=bearer(first)).status_code == 200


@ON_BOTH_TOPOLOGIES
def test_rate_limit_holds_across_processes(store, settings, published):
    """Two apps (two workers or replicas) share the key's bucket in Redis."""
    key = issue_key(store, "app", "write")
    one, two = (app_client(settings, store, rate_limit=0.5) for _ in range(2))  # burst: 1
    assert one.post("/watched", json=WATCH, headers=bearer(key)).status_code == 200
    refused = two.post("/watched", json=WATCH, headers=bearer(key))
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) == 2


# -- Redis memory ----------------------------------------------------------------------------------
@ON_BOTH_TOPOLOGIES
def test_only_caches_carry_a_ttl(store, settings, redis_client, published):
    """What volatile-lru may evict is exactly what can be recomputed (README, Operations): event ids and
    rate-limit buckets; a user's state (history and cached prediction) stays."""
    key = issue_key(store, "app", "admin")
    client = app_client(settings, store, rate_limit=100)
    client.post("/watched", json={**WATCH, "event_id": "ev1"}, headers=bearer(key))
    client.post("/admin/models/rollback", headers=bearer(key))
    with_ttl = {name.decode() for name in redis_client.scan_iter() if redis_client.ttl(name) > 0}
    assert with_ttl == {store.keys.event_id("U1", "ev1"), store.keys.rate_limit("app")}
    without = {name.decode() for name in redis_client.scan_iter() if redis_client.ttl(name) == -1}
    assert {store.keys.user("U1"), store.keys.api_keys, store.keys.user_event_log("U1"),
            store.keys.current_model} <= without


def test_out_of_memory_answers_503_json_and_reads_keep_working(private_redis):
    settings = Settings(redis_url=private_redis.url)
    store = Store.from_settings(settings)
    publish_test_model(store, DEFAULT_NEIGHBOURS)
    client = create_app(settings, store).test_client()
    assert client.post("/watched", json=WATCH).status_code == 200
    admin = redis.Redis.from_url(private_redis.url)
    admin.set("ballast", b"x" * 1_000_000)  # data without a TTL, like histories: never evicted
    admin.config_set("maxmemory-policy", "volatile-lru")
    admin.config_set("maxmemory", admin.info("memory")["used_memory"] - 500_000)

    refused = client.post("/watched", json={"user_id": "U1", "content_id": "C1045"})
    assert refused.status_code == 503
    assert refused.get_json() == {"error": "store_out_of_memory", "detail": refused.get_json()["detail"]}
    assert "out of memory" in refused.get_json()["detail"] and int(refused.headers["Retry-After"]) >= 1
    assert store.events.length() == 1  # nothing of the refused watch was written
    new_title = client.post("/watched", json={"user_id": "U3", "content_id": "NEW-TITLE"})  # registers a code
    assert new_title.status_code == 503 and new_title.get_json()["error"] == "store_out_of_memory"

    read = client.get("/recommend/U1")  # the cached prediction was evicted; the read recomputes
    assert read.status_code == 200 and read.get_json()["recommendation"] == "C1045"
    assert client.get("/recommend/U9").status_code == 200

    admin.config_set("maxmemory", 0)  # memory added: writes work again without a restart
    again = client.post("/watched", json={"user_id": "U1", "content_id": "C1045"})
    assert again.status_code == 200 and again.get_json()["predicted_next"] == "C1046"
    admin.close()
    store.close()


# -- no client input in a key name unvalidated -----------------------------------------------------
@pytest.mark.parametrize("bad", ["a{b", "a}b", "{u:x}", "a b", "a\nb", "a\rb", "a\tb", "", "x" * 129, "é"])
def test_ids_that_could_break_a_key_name_are_refused(bad):
    with pytest.raises(InvalidInput):
        validate_id(bad, "user_id")


def test_per_user_keys_sit_in_their_shards_slot_and_never_collide():
    """Every key of a user carries exactly one hash tag, its shard's, also with ':' in the ids;
    and no two (user, key kind, event id) share a name, whatever ':' or '|'-free ids they use."""
    keys = Keys("nw", shards=8)
    names = set()
    users = ("U1", "a:b", "a", "b", "x.y_z-9", "e", "h", "A" * 128)
    for user_id in users:
        tag = keys.shard_tag(keys.shard_of(user_id))
        user_keys = [keys.user(user_id), keys.event_log(keys.shard_of(user_id))]
        user_keys += [keys.event_id(user_id, event) for event in ("e:1", "1", "b", "h:a")]
        for name in user_keys:
            assert name.count("{") == 1 and name.count("}") == 1
            assert name[name.index("{") + 1 : name.index("}")] == tag
        names.update(user_keys[:1] + user_keys[2:])
    assert len(names) == len(users) * 5  # the state and four event ids each, all distinct


def test_shards_spread_evenly_over_the_cluster_slots():
    """Shard i's tag hashes into the i-th of equal slot ranges, so masters owning equal ranges
    hold equal numbers of shards."""
    from nextwatch.keys import SLOTS, key_slot, shard_tags

    for shards in (1, 3, 24, 64, 1024):
        bounds = [i * SLOTS // shards for i in range(shards + 1)]
        for shard, tag in enumerate(shard_tags(shards)):
            assert bounds[shard] <= key_slot(tag) < bounds[shard + 1]


@pytest.mark.parametrize("bad", ["a:b", "{x}", "a b", "a\nb", "", "x" * 65, "*"])
def test_api_key_names_that_could_break_a_key_name_are_refused(bad):
    with pytest.raises(InvalidInput):
        validate_key_name(bad)
    assert validate_key_name("mobile-app_2.0") == "mobile-app_2.0"
