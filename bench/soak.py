"""Soak: a bounded load against the real API while Redis restarts once in the middle.

    .venv/bin/python bench/soak.py [--duration 60] [--threads 4] [--workers 4] [--hard] [--down 0]

Starts a private redis-server with the product's persistence (AOF, appendfsync everysec; never
the Redis on 6379), publishes a synthetic model, seeds users with histories and cached
predictions, and starts the API (`nextwatch serve`, granian) and `nextwatch archive`. Client
threads on keep-alive connections then send, as fast as they are answered, 80% GET
/recommend/<user> and 20% POST /watched, each watch with a unique event_id; a watch that is
refused (503, 409) or gets no answer is sent again after its Retry-After, as a client that keeps
its events does. Halfway through, Redis is restarted on the same port and data folder: a clean
stop (SIGTERM, what a service manager sends) or with ``--hard`` a SIGKILL.

Afterwards the load stops, refused watches are retried until accepted (30 s at most), the
archiver drains the streams, and the script prints: requests answered, errors by status code, the
longest time without a successful answer (overall and for watches), p99 latency before, during
and after the restart, and accepted against recorded events (recorded: found in the archive's
Parquet files plus what is left in the shards' streams, one event per shard and stream id, as
training reads them).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import heapq
import http.client
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq

from nextwatch.archiving import read_group_lag
from nextwatch.local_processes.redis_server import RedisServer
from nextwatch.settings import Settings
from nextwatch.store import Store

# Run as a script, so bench/ is on sys.path and its modules import by their plain names.
from common import (
    Interrupted, Processes, free_port, machine_note, publish_synthetic_model, real_server_command,
    synthetic_histories, write_users,
)

RETRY_FOR_SECONDS = 30.0  # after the load, how long refused watches are still retried


class SoakProcesses(Processes):
    """The bench's processes, with Redis persisting as the product's does (AOF everysec)."""

    def __init__(self):
        super().__init__()
        self.redis = RedisServer(self.folder / "redis", persistent=True)


@dataclasses.dataclass
class Sample:
    kind: str  # "read" or "watch"
    started: float
    ended: float
    status: int  # 0: no HTTP answer (connection refused, reset or timed out)
    degraded: bool = False


class LoadThread(threading.Thread):
    def __init__(self, number: int, port: int, args, load_over: threading.Event):
        super().__init__(daemon=True)
        self.number, self.port, self.args, self.load_over = number, port, args, load_over
        self.rng = random.Random(args.seed * 1000 + number)
        self.samples: list[Sample] = []
        self.sent: set[str] = set()
        self.accepted: set[str] = set()
        self.retries: list[tuple[float, int, dict]] = []  # heap of (due, tie-breaker, event)
        self.tie_breaker = itertools.count()
        self.connection: http.client.HTTPConnection | None = None

    def run(self) -> None:
        count = 0
        give_up = None
        while True:
            now = time.monotonic()
            if self.retries and self.retries[0][0] <= now:
                self.watch(heapq.heappop(self.retries)[2])
            elif self.load_over.is_set():
                give_up = give_up or now + RETRY_FOR_SECONDS
                if not self.retries or now > give_up:
                    break
                time.sleep(0.02)
            elif self.rng.random() < self.args.write_share:
                count += 1
                event = {"user_id": f"u{self.rng.randrange(self.args.users)}",
                         "content_id": f"T{self.rng.randrange(self.args.titles):05d}",
                         "event_id": f"soak-{self.number}-{count}"}
                self.sent.add(event["event_id"])
                self.watch(event)
            else:
                self.read(f"u{self.rng.randrange(self.args.users)}")
        if self.connection is not None:
            self.connection.close()

    def watch(self, event: dict) -> None:
        status, headers, _body = self.request("watch", "POST", "/watched", json.dumps(event).encode())
        if 200 <= status < 300:
            self.accepted.add(event["event_id"])
        else:
            wait = float(headers.get("retry-after", 1))
            heapq.heappush(self.retries, (time.monotonic() + wait, next(self.tie_breaker), event))

    def read(self, user: str) -> None:
        self.request("read", "GET", f"/recommend/{user}")

    def request(self, kind: str, method: str, path: str, body: bytes | None = None):
        started = time.monotonic()
        try:
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            headers = {"Content-Type": "application/json"} if body else {}
            self.connection.request(method, path, body, headers)
            response = self.connection.getresponse()
            raw = response.read()
            status, answer_headers = response.status, {k.lower(): v for k, v in response.getheaders()}
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = None
            status, answer_headers, raw = 0, {}, b""
        self.samples.append(Sample(kind, started, time.monotonic(), status, b'"degraded":true' in raw))
        return status, answer_headers, raw


def seed(settings: Settings, args) -> None:
    store = Store.from_settings(settings)
    try:
        model = publish_synthetic_model(store, args.titles, args.neighbours, seed=args.seed)
        version = store.models.current_version()
        histories = synthetic_histories(model, args.users, settings.history_length, seed=args.seed + 1)
        predictions = [model.recommend(h, settings.cache_top_k) for h in histories]
        write_users(store.client, store.keys, settings, [f"u{i}" for i in range(args.users)], histories,
                    predictions, version)
    finally:
        store.close()


def restart_redis(processes: SoakProcesses, hard: bool, down: float) -> tuple[float, float, float]:
    """Stop Redis and start it again on its port and folder: (stopped, restarting, answering)."""
    stopped = time.monotonic()
    if hard:
        processes.redis.process.kill()
        processes.redis.process.wait()
    else:
        processes.redis.stop()  # SIGTERM: Redis flushes and fsyncs the AOF, then exits
    time.sleep(down)
    restarting = time.monotonic()
    processes.redis.start(timeout=60)
    return stopped, restarting, time.monotonic()


def wait_archived(store: Store, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lag = read_group_lag(store.client, store.keys, "archiver")
        if lag.exists and lag.pending == 0 and lag.lag == 0:
            return True
        time.sleep(0.5)
    return False


def recorded_events(store: Store, archive_dir) -> tuple[dict[str, list[tuple[int, str]]], int, int]:
    """{event id: [(shard, stream id)]} over the archive plus the shards' streams, each (shard,
    stream id) once (as training/sources.py's union_events keeps it; stream ids are unique only
    within a shard); and how many came from each."""
    seen: dict[tuple[int, str], str] = {}  # (shard, stream id) -> event id
    for path in sorted(archive_dir.glob("day=*/events-*.parquet")):
        for row in pq.read_table(path, columns=["shard", "stream_id", "event_id"]).to_pylist():
            seen.setdefault((row["shard"], row["stream_id"]), row["event_id"])
    archived = len(seen)
    for event in store.events.read_all():
        seen.setdefault((event["shard"], event["stream_id"]), event["event_id"])
    by_event: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    for key, event_id in seen.items():
        by_event[event_id].append(key)
    return by_event, archived, len(seen) - archived


def longest_gap(samples: list[Sample], start: float, end: float) -> tuple[float, float]:
    """The longest time between successive successful answers (and the load's edges): its
    length and when it began, both in seconds."""
    moments = [start, *sorted(s.ended for s in samples if 200 <= s.status < 300 and s.ended <= end), end]
    gap, at = max((b - a, a) for a, b in zip(moments, moments[1:]))
    return gap, at - start


def p99_ms(samples: list[Sample]) -> str:
    if not samples:
        return "-"
    latencies = sorted(s.ended - s.started for s in samples)
    return f"{latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000:.1f}"


def report(threads: list[LoadThread], times: dict, store: Store, archive_dir, args) -> None:
    samples = [s for t in threads for s in t.samples]
    start, stopped, back, load_end = times["start"], times["stopped"], times["answering"], times["load_end"]
    served = [s for s in samples if s.status]
    by_status = collections.Counter((s.kind, s.status) for s in samples)
    after_back = [s for s in samples if s.started >= back and s.status == 200]
    first_write = min((s.ended for s in after_back if s.kind == "watch"), default=load_end)
    first_read = min((s.ended for s in after_back if s.kind == "read" and not s.degraded), default=load_end)
    recovered = first_write
    seconds = load_end - start
    print(f"\nload: {seconds:.1f} s, {len(served)} requests answered ({len(served) / seconds:.0f}/s), "
          f"{sum(s.degraded for s in samples)} of them degraded reads")
    print("answers by status: " + ", ".join(
        f"{kind} {status or 'no answer'}: {n}" for (kind, status), n in sorted(by_status.items())))
    errors = collections.Counter(s.status for s in samples if not 200 <= s.status < 300)
    listed = ", ".join(f"{status or 'no HTTP answer'}: {n}" for status, n in sorted(errors.items()))
    print(f"errors by status: {listed or 'none'}")
    how = "SIGKILL" if args.hard else "clean stop, SIGTERM"
    print(f"Redis restart ({how}): stopped at {stopped - start:.2f} s, answering again at {back - start:.2f} s "
          f"({back - stopped:.2f} s away); first accepted watch {first_write - back:+.2f} s and first "
          f"non-degraded read {first_read - back:+.2f} s after that")
    overall, at = longest_gap(samples, start, load_end)
    writes, write_at = longest_gap([s for s in samples if s.kind == "watch"], start, load_end)
    print(f"longest gap without a successful answer: overall {overall:.2f} s (from {at:.2f} s), "
          f"watches {writes:.2f} s (from {write_at:.2f} s)")
    phases = {"before": lambda s: s.started < stopped, "during": lambda s: stopped <= s.started < recovered,
              "after": lambda s: s.started >= recovered}
    print(f"p99 latency, ms (during = from the stop to the first accepted watch, {recovered - stopped:.2f} s):")
    print(f"  {'':<18}" + "".join(f"{name:>16}" for name in phases))
    for label, kinds in (("GET /recommend", ("read",)), ("POST /watched", ("watch",)), ("all", ("read", "watch"))):
        cells = []
        for belongs in phases.values():
            chosen = [s for s in served if s.kind in kinds and belongs(s) and s.ended <= load_end]
            cells.append(f"{p99_ms(chosen)} ({len(chosen)})")
        print(f"  {label:<18}" + "".join(f"{cell:>16}" for cell in cells))

    windows = collections.Counter(int((s.ended - start) // 5) for s in served if s.ended <= load_end)
    print("answers per second, by 5 s window: " + " ".join(
        f"{windows[w] / 5:.0f}" for w in range(int((load_end - start) // 5))))
    print(f"load average at the restart: {times['load_at_restart']}")

    sent = set().union(*(t.sent for t in threads))
    accepted = set().union(*(t.accepted for t in threads))
    by_event, archived, stream_only = recorded_events(store, archive_dir)
    recorded = {e for e in by_event if e is not None}
    twice = sorted(e for e in recorded if len(by_event[e]) > 1)
    print(f"events: {len(sent)} sent, {len(accepted)} accepted (2xx), {len(recorded & accepted)} of them recorded "
          f"({archived} events in the archive, {stream_only} only in the streams); accepted but not recorded: "
          f"{len(accepted - recorded)}; recorded but never accepted: {len(recorded - accepted)}; recorded twice: "
          f"{len(twice)}; never accepted: {len(sent - accepted)}")


def run_load(processes: SoakProcesses, port: int, args) -> tuple[list[LoadThread], dict[str, float]]:
    load_over = threading.Event()
    threads = [LoadThread(n, port, args, load_over) for n in range(args.threads)]
    times = {"start": time.monotonic()}
    for thread in threads:
        thread.start()
    time.sleep(args.duration / 2)
    times["load_at_restart"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    times["stopped"], times["restarting"], times["answering"] = restart_redis(processes, args.hard, args.down)
    time.sleep(max(0.0, times["start"] + args.duration - time.monotonic()))
    times["load_end"] = time.monotonic()
    load_over.set()
    for thread in threads:
        thread.join(RETRY_FOR_SECONDS + 30)
    return threads, times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--workers", type=int, default=Settings().workers, help="API worker processes (default 4)")
    parser.add_argument("--write-share", type=float, default=0.2, help="share of POST /watched (default 0.2)")
    parser.add_argument("--hard", action="store_true", help="SIGKILL Redis instead of stopping it cleanly")
    parser.add_argument("--down", type=float, default=0.0, help="seconds Redis stays stopped (default 0)")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--titles", type=int, default=5_000)
    parser.add_argument("--neighbours", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    print(f"nextwatch soak: {args.duration:.0f} s, {args.threads} client threads, {1 - args.write_share:.0%} GET "
          f"/recommend + {args.write_share:.0%} POST /watched (unique event ids), API workers x{args.workers}; "
          f"{machine_note()}", flush=True)
    try:
        with SoakProcesses() as processes:
            settings = Settings().with_overrides(redis_url=processes.redis.url)
            seed(settings, args)
            port = free_port()
            processes.serve("api", real_server_command(port, args.workers), port, "/readyz")
            archive_dir = processes.folder / "archive"
            env = {"NEXTWATCH_REDIS_URL": processes.redis.url, "NEXTWATCH_ARCHIVE_DIR": str(archive_dir)}
            with open(processes.folder / "archiver.log", "ab") as log:
                archiver = subprocess.Popen([sys.executable, "-m", "nextwatch.cli", "archive"],
                                            env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)
            print(f"seeded {args.users} users (50-title histories, cached top-10), model of {args.titles} titles; "
                  f"API on 127.0.0.1:{port}, redis-server (AOF everysec) on 127.0.0.1:{processes.redis.port}, "
                  "archiver running", flush=True)
            try:
                threads, times = run_load(processes, port, args)
                store = Store.from_settings(settings)
                try:
                    if not wait_archived(store):
                        print("the archiver did not catch up within 120 s", file=sys.stderr)
                    archiver.terminate()  # SIGTERM: it writes what it holds and exits
                    archiver.wait(30)
                    report(threads, times, store, archive_dir, args)
                finally:
                    store.close()
            finally:
                if archiver.poll() is None:
                    archiver.kill()
                    archiver.wait()
            print(f"end: {machine_note()}")
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; every process this benchmark started has been stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
