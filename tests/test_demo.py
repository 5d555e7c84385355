"""`nextwatch demo` end to end: it starts everything, the contract works, Ctrl-C leaves no
process behind, and a second start reuses the published model."""

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from nextwatch.localstack.redis_server import free_port


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc (children of children included)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_demo(data_dir, port, redis_port):
    command = [sys.executable, "-m", "nextwatch.cli", "demo", "--port", str(port), "--workers", "2",
               "--redis-port", str(redis_port), "--data-dir", str(data_dir)]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("NEXTWATCH_REDIS_URL", None)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Press Ctrl-C" in line:
            return process, "".join(lines)
    process.kill()
    raise AssertionError("demo did not start:\n" + "".join(lines))


def stop_demo(process):
    children = descendants(process.pid)
    assert children, "the demo should have child processes (redis-server, gunicorn)"
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert "stopped" in output
    time.sleep(0.5)
    left = [pid for pid in children if alive(pid)]
    assert left == [], f"processes left running: {left}"


def test_demo_runs_the_contract_and_stops_cleanly(tmp_path):
    port, redis_port = free_port(), free_port()
    process, output = start_demo(tmp_path, port, redis_port)
    try:
        assert "training the first model" in output
        assert f"curl http://localhost:{port}/recommend/U999" in output
        base = f"http://127.0.0.1:{port}"
        watched = requests.post(f"{base}/watched", json={"user_id": "U999", "content_id": "C1010"}, timeout=5).json()
        assert watched["user_id"] == "U999" and watched["watched"] == "C1010"
        assert watched["predicted_next"] not in (None, "C1010")
        again = requests.get(f"{base}/recommend/U999", timeout=5).json()
        assert again["recommendation"] == watched["predicted_next"] and again["cache_hit"] is True
        new_user = requests.get(f"{base}/recommend/U1234", timeout=5).json()
        assert new_user["recommendation"] == "C000"
        assert new_user["cache_hit"] is False and new_user["fallback_used"] is True
        metrics = requests.get(f"{base}/metrics", timeout=5).text
        for name in ("cache_hits_total", "cache_misses_total", "fallbacks_used_total"):
            assert name in metrics
    finally:
        if process.poll() is None:
            stop_demo(process)

    # Second start: same data folder, nothing regenerated or retrained, the AOF kept the state.
    process, output = start_demo(tmp_path, port, redis_port)
    try:
        assert "already published" in output and "training" not in output
        again = requests.get(f"http://127.0.0.1:{port}/recommend/U999", timeout=5).json()
        assert again["recommendation"] == watched["predicted_next"] and again["cache_hit"] is True
    finally:
        stop_demo(process)
