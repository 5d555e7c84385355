"""The API under the production server: gunicorn with several workers, metrics summed."""

import sys
import urllib.request

import pytest
import requests

from conftest import DEFAULT_NEIGHBOURS, parse_metrics, publish_test_model
from nextwatch.localstack.redis_server import free_port
from nextwatch.localstack.supervisor import Supervisor, http_ok


@pytest.fixture
def api(settings, store):
    """`nextwatch serve` with 2 workers on a free port, against the test Redis."""
    port = free_port()
    supervisor = Supervisor()
    env = {"NEXTWATCH_REDIS_URL": settings.redis_url, "NEXTWATCH_KEY_PREFIX": settings.key_prefix}
    supervisor.start("api", [sys.executable, "-m", "nextwatch.cli", "serve", "--port", str(port), "--workers", "2"],
                     env, ready=http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=60)
    yield f"http://127.0.0.1:{port}"
    supervisor.stop_all()


def test_counts_are_summed_over_workers(api, store):
    publish_test_model(store, DEFAULT_NEIGHBOURS)
    for i in range(20):
        # New connections each time (no session), so gunicorn spreads them over its workers.
        answer = requests.post(f"{api}/watched", json={"user_id": f"U{i}", "content_id": "C1010"}, timeout=5)
        assert answer.json()["predicted_next"] == "C1045"
        assert requests.get(f"{api}/recommend/U{i}", timeout=5).json()["cache_hit"] is True
        assert requests.get(f"{api}/recommend/N{i}", timeout=5).json()["fallback_used"] is True
    requests.post(f"{api}/watched", json={"user_id": "U0", "content_id": "C1045"}, timeout=5)  # predicted: a hit
    for _ in range(5):  # scrapes land on different workers; each must see the same totals
        values = parse_metrics(urllib.request.urlopen(f"{api}/metrics", timeout=5).read().decode())
        assert values["cache_hits_total"] == 20
        assert values["cache_misses_total"] == 20
        assert values['fallbacks_used_total{step="popular"}'] == 20
        assert values["watch_events_total"] == 21
        assert values["prediction_hits_total"] == 1
        assert values["model_version"] == 1
        assert values['http_request_duration_seconds_count{endpoint="/watched",method="POST",status="200"}'] == 21


def test_served_contract_over_http(api, store):
    publish_test_model(store, DEFAULT_NEIGHBOURS)
    watched = requests.post(f"{api}/watched", json={"user_id": "U999", "content_id": "C1010"}, timeout=5)
    assert watched.json()["predicted_next"] == "C1045"
    assert requests.get(f"{api}/recommend/U999", timeout=5).json()["cache_hit"] is True
    bad = requests.post(f"{api}/watched", data="nope", headers={"Content-Type": "application/json"}, timeout=5)
    assert bad.status_code == 400 and bad.json()["error"] == "malformed_json"
    assert requests.get(f"{api}/readyz", timeout=5).status_code == 200
