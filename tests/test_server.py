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


def raw_exchange(base: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is (no client library tidying it up); status, headers, body."""
    import socket

    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize("request_bytes, status, error", [
    (b"GET /recommend/U1?k=" + b"1" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "request_line_too_long"),
    (b"GET /recommend/U1 HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n", 400, "malformed_request"),
    (b"NOT A REQUEST\r\n\r\n", 400, "malformed_request"),
])
def test_requests_the_server_refuses_itself_get_json_errors(api, request_bytes, status, error):
    import json

    code, headers, body = raw_exchange(api, request_bytes)
    assert code == status
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == error
    assert requests.get(f"{api}/healthz", timeout=5).status_code == 200  # and the workers serve on
