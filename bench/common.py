"""What the bench scripts share: private processes, synthetic data written with the store's own
encodings, and running and reading wrk.

Everything binds to 127.0.0.1. The redis-server is always a private one on a free port; the
machine's Redis on 6379 is never used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from nextwatch.keys import Keys
from nextwatch.local_processes.redis_server import RedisServer, free_port
from nextwatch.local_processes.supervisor import Supervisor, http_ok
from nextwatch.model import NextTitleModel
from nextwatch.model.sequence import SequenceModel
from nextwatch.settings import Settings
from nextwatch.store.user_state import CachedPrediction, encode_state

BENCH_DIR = Path(__file__).resolve().parent
WRK_SCRIPTS = BENCH_DIR / "wrk"


class Interrupted(Exception):
    """SIGTERM, turned into an exception so that every ``finally`` still runs."""


def _raise_interrupted(signum, frame):
    raise Interrupted()


class Processes:
    """A temporary folder, a private redis-server and supervised servers; ``close()`` stops
    every one of them (also on Ctrl-C and SIGTERM when used as a context manager)."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="nextwatch-bench-"))
        self.redis = RedisServer(self.folder / "redis", persistent=False)
        self.supervisor = Supervisor()
        self.groups: dict[str, int] = {}  # server name -> its process group (= its leader's pid)
        self._previous_sigterm = None

    def __enter__(self) -> "Processes":
        self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupted)
        try:
            self.redis.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def serve(self, name: str, command: list[str], port: int, health_path: str, env: dict | None = None) -> str:
        """Start a server (in its own process group) and wait until it answers; its base URL."""
        metrics_dir = self.folder / f"metrics-{name}"
        env = {"NEXTWATCH_REDIS_URL": self.redis.url, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), **(env or {})}
        base = f"http://127.0.0.1:{port}"
        process = self.supervisor.start(name, command, env, ready=http_ok(base + health_path), timeout=60)
        self.groups[name] = process.pid
        return base

    def close(self) -> None:
        try:
            self.supervisor.stop_all()
        finally:
            self.redis.stop()
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
                self._previous_sigterm = None
            shutil.rmtree(self.folder, ignore_errors=True)


def real_server_command(port: int, workers: int) -> list[str]:
    """The production entry point, exactly as the demo starts it."""
    return [sys.executable, "-m", "nextwatch.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers)]


def bare_server_command(port: int, workers: int, server: str = "granian") -> list[str]:
    return [sys.executable, str(BENCH_DIR / "bare_app.py"), "--port", str(port), "--workers", str(workers),
            "--server", server]


# -- synthetic catalog, model and users --------------------------------------------------------

def title_ids(count: int) -> list[str]:
    return [f"T{i:05d}" for i in range(count)]


def synthetic_model(titles: int, neighbours: int, seed: int, sequence: bool = False) -> NextTitleModel:
    """A Zipf-like popularity and, per title, ``neighbours`` distinct next titles drawn by
    popularity (Gumbel top-k, so no Python loop per title), scores falling with rank."""
    rng = np.random.default_rng(seed)
    popularity = (1.0 / np.arange(1, titles + 1) ** 0.8).astype(np.float32)
    log_p = np.log(popularity / popularity.sum())
    codes = np.empty((titles, neighbours), dtype=np.int32)
    for start in range(0, titles, 500):
        rows = min(500, titles - start)
        keys = log_p + rng.gumbel(size=(rows, titles))
        keys[np.arange(rows), np.arange(start, start + rows)] = -np.inf  # a title is not its own next
        codes[start : start + rows] = np.argpartition(-keys, neighbours, axis=1)[:, :neighbours]
    scores = np.sort(rng.random((titles, neighbours), dtype=np.float32), axis=1)[:, ::-1]
    scores /= scores.sum(axis=1, keepdims=True)
    offsets = np.arange(titles + 1, dtype=np.int64) * neighbours
    network = SequenceModel.random(titles, dim=64, blocks=2, max_length=50, seed=seed) if sequence else None
    return NextTitleModel(popularity, offsets, codes.ravel(), scores.ravel().copy(), sequence=network,
                          sequence_weight=16.0 if sequence else 0.0)


def publish_synthetic_model(store, titles: int = 5_000, neighbours: int = 50, seed: int = 1,
                            sequence: bool = False) -> NextTitleModel:
    """Register T00000.. (in order, so code == index) and publish the model through the store;
    ``sequence``: with a random sequence network of the shipped shape (its cost is that of a
    trained one)."""
    codes = store.catalog.register(title_ids(titles))
    assert codes == list(range(titles)), "the catalog was not empty"
    model = synthetic_model(titles, neighbours, seed, sequence)
    store.models.publish(model)
    return model


def synthetic_histories(model: NextTitleModel, users: int, length: int, seed: int) -> np.ndarray:
    """``users`` x ``length`` title codes: random walks that follow a neighbour 70% of the time
    and otherwise jump to a title drawn by popularity (as viewers binge, then browse)."""
    rng = np.random.default_rng(seed)
    titles = model.title_count
    p = model.popularity / model.popularity.sum()
    out = np.empty((users, length), dtype=np.uint32)
    current = rng.choice(titles, size=users, p=p)
    for step in range(length):
        out[:, step] = current
        starts = model.neighbour_offsets[current]
        counts = model.neighbour_offsets[current + 1] - starts
        follow = (rng.random(users) < 0.7) & (counts > 0)
        picked = starts + (rng.random(users) * np.maximum(counts, 1)).astype(np.int64)
        jump = rng.choice(titles, size=users, p=p)
        current = np.where(follow, model.neighbour_codes[np.minimum(picked, len(model.neighbour_codes) - 1)], jump)
    return out


IMPRESSIONS_AT = 1.7e9 + 10_000  # when the bulk writer's impressions were shown (unix seconds)


def bulk_impressions(codes, settings: Settings) -> np.ndarray:
    """The impressions rows that ``record_impressions`` of ``codes`` one at a time at
    IMPRESSIONS_AT leaves, for titles shown once each (none demoted)."""
    rows = [(int(code), 1, int(IMPRESSIONS_AT), 0) for code in codes]
    return np.asarray(rows, dtype="<u4").reshape(-1, 4)


def write_users(client, keys: Keys, settings: Settings, user_ids, histories, predictions, model_version: int,
                batch: int = 2_000, impressions=None) -> None:
    """The bulk equivalent of ``UserStore.record_watch`` (one per title), ``record_impressions``
    (one per shown title in ``impressions``, when given) then ``save_prediction``: the same key,
    the same byte encoding, pipelined. ``check_bulk_writer`` proves the equivalence against the
    real code path."""
    pipe = client.pipeline(transaction=False)
    for index, (user_id, history, codes) in enumerate(zip(user_ids, histories, predictions), 1):
        history = np.asarray(history, dtype="<u4")[-settings.history_length :]
        prediction = CachedPrediction.encode(model_version, history, codes) if codes is not None else b""
        shown = bulk_impressions(impressions[index - 1], settings) if impressions is not None else None
        pipe.set(keys.user(user_id), encode_state(history, prediction) if shown is None
                 else encode_state(history, prediction, shown))
        if index % batch == 0:
            pipe.execute()
    pipe.execute()


def check_bulk_writer(store, settings: Settings, history, codes, model_version: int, shown=None) -> list[str]:
    """Write one user through the real store code (``record_watch`` per title, then
    ``save_prediction``) and another with ``write_users``; return every difference found in the
    stored bytes, the TTL and MEMORY USAGE (an empty list: the bulk writer is faithful).
    Both users' keys are deleted again; the real path's events stay in the event log."""
    client, keys = store.client, store.keys
    real, bulk = "check-real", "check-bulk"  # same length, so equal memory is expected
    recorded = None
    for position, code in enumerate(history):
        recorded = store.users.record_watch(real, f"T{int(code):05d}", int(code), 1.7e9 + position, None)
    for code in shown if shown is not None else ():
        store.users.record_impressions(real, [f"T{int(code):05d}"], [int(code)], IMPRESSIONS_AT, None)
    store.users.save_prediction(real, model_version, recorded.history, codes)
    write_users(client, keys, settings, [bulk], [history], [codes], model_version,
                impressions=[shown] if shown is not None else None)
    problems = []
    a, b = keys.user(real), keys.user(bulk)
    if client.get(a) != client.get(b):
        problems.append("user state: stored bytes differ")
    if client.ttl(a) != client.ttl(b):
        problems.append(f"user state: TTL differs ({client.ttl(a)} vs {client.ttl(b)})")
    if client.memory_usage(a) - len(a) != client.memory_usage(b) - len(b):
        problems.append(f"user state: MEMORY USAGE {client.memory_usage(a)} vs {client.memory_usage(b)}")
    for key in (a, b):
        client.delete(key)  # one by one: on a cluster the two users are in different slots
    return problems


# -- wrk ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class WrkResult:
    requests_per_second: float
    mean_ms: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors + non-2xx/3xx
    output: str
    cpu_us: dict = dataclasses.field(default_factory=dict)  # CPU microseconds per request, by process

    def line(self) -> str:
        errors = f"  ERRORS {self.errors}" if self.errors else ""
        return (f"{self.requests_per_second:9.0f} req/s  p50 {self.p50_ms:7.2f} ms  p99 {self.p99_ms:7.2f} ms"
                f"  ({self.requests} requests){errors}")


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS_MS[unit]


def parse_wrk(output: str) -> WrkResult:
    def find(pattern):
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"wrk output has no line matching {pattern!r}:\n{output}")
        return match.group(1)

    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = (sum(int(x) for x in socket_errors.groups()) if socket_errors else 0) + (
        int(non_2xx.group(1)) if non_2xx else 0)
    return WrkResult(
        requests_per_second=float(find(r"^Requests/sec:\s+([\d.]+)")),
        mean_ms=_ms(find(r"^\s+Latency\s+(\S+)")),
        p50_ms=_ms(find(r"^\s+50%\s+(\S+)")),
        p99_ms=_ms(find(r"^\s+99%\s+(\S+)")),
        requests=int(find(r"^\s+(\d+) requests in")),
        errors=errors,
        output=output,
    )


@contextlib.contextmanager
def _killed_on_exit(process: subprocess.Popen):
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def run_wrk(url: str, script: str | None, duration: float, connections: int, threads: int = 2,
            script_args: tuple = ()) -> WrkResult:
    threads = min(threads, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    if script:
        command += ["-s", str(WRK_SCRIPTS / script)]
    command.append(url)
    if script_args:
        command += ["--", *map(str, script_args)]
    with _killed_on_exit(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, text=True)) as process:
        output, _ = process.communicate(timeout=duration + 60)
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode}:\n{output}")
    return parse_wrk(output)


# -- small things --------------------------------------------------------------------------------

def counters(base_url: str) -> dict[str, float]:
    """The API's Prometheus counters (summed over workers), by sample name."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(base_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def group_cpu_seconds(group: int) -> float:
    """User + system CPU seconds of every live process in a process group (a server started by
    the Supervisor leads its own group: granian's main process and its workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # fields[0] is the state; [2] the process group
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def process_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_note() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


__all__ = [
    "Interrupted", "Processes", "WrkResult", "run_wrk", "parse_wrk", "counters", "free_port",
    "publish_synthetic_model", "synthetic_histories", "write_users", "check_bulk_writer", "title_ids",
    "real_server_command", "bare_server_command", "machine_note", "group_cpu_seconds", "process_cpu_seconds",
]
