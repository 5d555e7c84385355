"""The API under the production server: `nextwatch serve` (granian, several worker processes),
as a real process on a free port. What the server must give: metrics summed over workers, a
crashed worker replaced (its counts kept, its per-process gauge dropped), a graceful stop,
keep-alive, the body limit, and the API's JSON error shape for what it refuses before routing."""

import json
import os
import signal
import socket
import sys
import time
import urllib.request

import psutil
import pytest
import requests

from conftest import DEFAULT_NEIGHBOURS, parse_metrics, publish_test_model
from nextwatch.local_processes.redis_server import free_port
from nextwatch.local_processes.supervisor import Supervisor, http_ok


@pytest.fixture
def api(settings, store, tmp_path):
    """`nextwatch serve` with 2 workers on a free port, against the test Redis; its metric files
    in tmp_path/metrics."""
    port = free_port()
    supervisor = Supervisor()
    env = {"NEXTWATCH_REDIS_URL": settings.redis_url, "NEXTWATCH_KEY_PREFIX": settings.key_prefix,
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    process = supervisor.start("api", [sys.executable, "-m", "nextwatch.cli", "serve", "--port", str(port),
                                       "--workers", "2"],
                               env, ready=http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=60)
    process.metrics_folder = str(tmp_path / "metrics")
    yield f"http://127.0.0.1:{port}", process
    supervisor.stop_all()


def metrics_of(base: str) -> dict[str, float]:
    return parse_metrics(urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode())


def workers_of(process) -> list[psutil.Process]:
    return [child for child in psutil.Process(process.pid).children() if child.is_running()]


def test_counts_are_summed_over_workers(api, store):
    base, _ = api
    publish_test_model(store, DEFAULT_NEIGHBOURS)
    for i in range(20):
        # New connections each time (no session), so the server spreads them over its workers.
        answer = requests.post(f"{base}/watched", json={"user_id": f"U{i}", "content_id": "C1010"}, timeout=5)
        assert answer.json()["predicted_next"] == "C1045"
        assert requests.get(f"{base}/recommend/U{i}", timeout=5).json()["cache_hit"] is True
        assert requests.get(f"{base}/recommend/N{i}", timeout=5).json()["fallback_used"] is True
    requests.post(f"{base}/watched", json={"user_id": "U0", "content_id": "C1045"}, timeout=5)  # predicted: a hit
    for _ in range(5):  # scrapes land on different workers; each must see the same totals
        values = metrics_of(base)
        assert values["cache_hits_total"] == 20
        assert values["cache_misses_total"] == 20
        assert values['fallbacks_used_total{step="popular"}'] == 20
        assert values["watch_events_total"] == 21
        assert values["prediction_hits_total"] == 1
        assert values["model_version"] == 1
        assert values['http_request_duration_seconds_count{endpoint="/watched",method="POST",status="200"}'] == 21


def test_served_contract_over_http(api, store):
    base, _ = api
    publish_test_model(store, DEFAULT_NEIGHBOURS)
    watched = requests.post(f"{base}/watched", json={"user_id": "U999", "content_id": "C1010"}, timeout=5)
    assert watched.json()["predicted_next"] == "C1045"
    assert requests.get(f"{base}/recommend/U999", timeout=5).json()["cache_hit"] is True
    bad = requests.post(f"{base}/watched", data="nope", headers={"Content-Type": "application/json"}, timeout=5)
    assert bad.status_code == 400 and bad.json()["error"] == "malformed_json"
    assert requests.get(f"{base}/readyz", timeout=5).status_code == 200


def test_a_crashed_worker_is_replaced_and_its_counts_kept(api, store):
    base, process = api
    publish_test_model(store, DEFAULT_NEIGHBOURS)
    for i in range(10):
        requests.post(f"{base}/watched", json={"user_id": f"U{i}", "content_id": "C1010"}, timeout=5)
    before = workers_of(process)
    assert len(before) == 2
    folder = process.metrics_folder
    assert os.path.isdir(folder)
    gauges = lambda: {name for name in os.listdir(folder) if name.startswith("gauge_live")}  # noqa: E731
    victim = before[0]
    deadline = time.monotonic() + 10
    while f"gauge_liveall_{victim.pid}.db" not in gauges():  # every worker learns the version once used
        requests.get(f"{base}/recommend/U1", timeout=5)
        assert time.monotonic() < deadline, "the victim worker never served"
    victim.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(workers_of(process)) < 2 or victim.pid in {w.pid for w in workers_of(process)}:
        assert time.monotonic() < deadline, "the killed worker was not replaced"
        time.sleep(0.2)
    for _ in range(10):  # the survivors and the new worker answer
        assert requests.get(f"{base}/recommend/U1", timeout=5).status_code == 200
    values = metrics_of(base)
    assert values["watch_events_total"] == 10  # the dead worker's share is still in the sum
    assert f"gauge_liveall_{victim.pid}.db" not in gauges()  # its per-process gauge is gone
    assert all(key.split('pid="')[1].split('"')[0] != str(victim.pid)
               for key in values if key.startswith("serving_model_version{"))


def test_sigterm_stops_gracefully(api, store):
    base, process = api
    publish_test_model(store, DEFAULT_NEIGHBOURS)
    assert requests.get(f"{base}/recommend/U1", timeout=5).status_code == 200
    workers = workers_of(process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    gone, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/healthz", timeout=2)


def test_keep_alive_serves_many_requests_on_one_connection(api, store):
    base, _ = api
    publish_test_model(store, DEFAULT_NEIGHBOURS)
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        reader = connection.makefile("rb")
        for i in range(5):
            connection.sendall(f"GET /recommend/U{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status = reader.readline()
            headers = {}
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = reader.read(int(headers["content-length"]))
            assert status.startswith(b"HTTP/1.1 200") and json.loads(body)["user_id"] == f"U{i}"


def raw_exchange(base: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is (no client library tidying it up); status, headers, body."""
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
    (b"GET /recommend/U1?k=" + b"1" * 9000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
     414, "request_line_too_long"),
    (b"GET /healthz?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 414, "request_line_too_long"),
    (b"GET /recommend/U1 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\nConnection: close\r\n\r\n",
     431, "headers_too_large"),
    (b"POST /watched HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 70000\r\n"
     b"Connection: close\r\n\r\n" + b" " * 70000, 413, "body_too_large"),
])
def test_requests_refused_before_routing_get_json_errors(api, request_bytes, status, error):
    base, _ = api
    code, headers, body = raw_exchange(base, request_bytes)
    assert code == status
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == error
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200  # and the workers serve on


@pytest.mark.parametrize("request_bytes", [
    b"GET /recommend/U1 HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n",
    b"NOT A REQUEST\r\n\r\n",
])
def test_malformed_http_is_refused_without_harm(api, request_bytes):
    """Bytes that are not HTTP never reach the app: the server's HTTP parser (hyper, in Rust)
    answers 400 itself, with an empty body (README: a difference from the gunicorn set-up), and
    closes the connection; every worker serves on."""
    base, _ = api
    code, headers, body = raw_exchange(base, request_bytes)
    assert code == 400 and headers.get("connection") == "close" and body == b""
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
