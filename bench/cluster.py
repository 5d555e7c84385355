"""The API on a Redis Cluster against the same API on one Redis, side by side, and what a master
failure costs with and without waiting for replicas.

    .venv/bin/python bench/cluster.py [--rounds 4] [--duration 5] [--workers 4] [--kill-seconds 12]

Starts one private redis-server and a Redis Cluster of 3 masters and 3 replicas on loopback
(``nextwatch.local_processes.redis_cluster``), seeds both with bench/serve.py's data (a 5,000-title
model with a sequence network, 10,000 + 10,000 users), and serves the API three times with the
production server: on one Redis, on the cluster, and on the cluster with
NEXTWATCH_WRITE_REPLICAS=1 (every watch waits until a replica holds it). wrk measures, in
interleaved rounds (every other round reversed):

  (b1) GET /recommend hits on one Redis      (b3) the same on the cluster
  (c1) POST /watched on one Redis             (c3) on the cluster     (c3w) on the cluster, WAIT 1

Targets: (b3)/(b1) and (c3)/(c1) >= 0.8. (c3w) against (c3) is the price of WAIT in throughput
and latency.

Then, for WAIT 0 and WAIT 1 in turn, client threads send watches (each with a unique event id,
retried after a 503 until accepted) while a master is SIGKILLed; its replica is promoted and,
after a while, the old master is started again (it rejoins as a replica). Printed: the failover
time, the longest time without a successful answer, and the watches answered 2xx that the event
log does not hold (lost).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import statistics
import sys
import tempfile
import threading
import time

import requests

from nextwatch.local_processes.redis_cluster import LocalRedisCluster
from nextwatch.settings import Settings
from nextwatch.store import Store

from common import Interrupted, Processes, free_port, machine_note, real_server_command, run_wrk
from serve import seed

TARGET = 0.8
NAMES = {"b1": "(b1) GET hit, one Redis", "b3": "(b3) GET hit, cluster", "c1": "(c1) POST, one Redis",
         "c3": "(c3) POST, cluster", "c3w": "(c3w) POST, cluster, WAIT 1"}


def measure(key: str, urls: dict, args, duration: float, round_number: int):
    url = urls[{"b1": "one", "c1": "one", "b3": "cluster", "c3": "cluster", "c3w": "durable"}[key]]
    if key.startswith("b"):
        return run_wrk(url + "/", "recommend.lua", duration, args.connections, script_args=(args.users, "r", round_number))
    return run_wrk(url + "/", "watched.lua", duration, args.connections,
                   script_args=(args.users, "w", args.titles, round_number, 1))


class Watchers:
    """Client threads sending watches with unique event ids, each retried until accepted."""

    def __init__(self, base: str, threads: int = 3):
        self.base = base
        self.accepted: set[str] = set()
        self.successes: list[float] = []
        self.statuses: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)

    def _run(self, number: int) -> None:
        session, sent = requests.Session(), 0
        while not self._stop.is_set():
            event_id, sent = f"k{number}-{sent}", sent + 1
            body = {"user_id": f"F{(number * 7919 + sent) % 3000}", "content_id": "T00001", "event_id": event_id}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    answer = session.post(f"{self.base}/watched", json=body, timeout=10)
                except requests.RequestException:
                    time.sleep(0.1)
                    continue
                with self._lock:
                    self.statuses[answer.status_code] += 1
                    if answer.ok:
                        self.accepted.add(event_id)
                        self.successes.append(time.monotonic())
                if answer.ok:
                    break
                time.sleep(0.2)

    def longest_gap(self) -> float:
        times = sorted(self.successes)
        return max((b - a for a, b in zip(times, times[1:])), default=float("nan"))


def kill_a_master(cluster: LocalRedisCluster, settings: Settings, base: str, down_seconds: float) -> dict:
    store = Store.from_settings(settings)
    try:
        victim = next(node for node in cluster.nodes() if node.role == "master")
        with Watchers(base) as watchers:
            time.sleep(3)
            killed = time.monotonic()
            cluster.kill(victim)
            cluster.wait_for_failover(victim.slots[0][0])
            failover = time.monotonic() - killed
            time.sleep(max(0.0, down_seconds - failover))
            cluster.restart(victim)
            time.sleep(4)
        recorded = {event["event_id"] for event in store.events.read_all() if event["event_id"]}
        lost = watchers.accepted - recorded
        return {"failover_s": failover, "gap_s": watchers.longest_gap(), "accepted": len(watchers.accepted),
                "lost": len(lost), "statuses": dict(watchers.statuses)}
    finally:
        store.close()
        cluster.wait_until_healthy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=Settings().workers)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--titles", type=int, default=5_000)
    parser.add_argument("--neighbours", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-seconds", type=float, default=12.0,
                        help="how long the killed master stays down before it is started again")
    parser.add_argument("--no-sequence", dest="sequence", action="store_false")
    args = parser.parse_args(argv)
    keys = ["b1", "b3", "c1", "c3", "c3w"]
    print(f"nextwatch cluster benchmark; {machine_note()}", flush=True)
    folder = tempfile.mkdtemp(prefix="nextwatch-bench-cluster-")
    try:
        with Processes() as processes, LocalRedisCluster(folder, appendonly=True).start() as cluster:
            one = Settings(redis_url=processes.redis.url)
            on_cluster = Settings(redis_url=cluster.url)
            seed(one, args)
            seed(on_cluster, args)
            urls = {}
            for name, settings, extra in (("one", one, {}), ("cluster", on_cluster, {}),
                                          ("durable", on_cluster, {"NEXTWATCH_WRITE_REPLICAS": "1",
                                                                   "NEXTWATCH_WRITE_REPLICAS_TIMEOUT": "0.5"})):
                port = free_port()
                urls[name] = processes.serve(name, real_server_command(port, args.workers), port, "/readyz",
                                             env={"NEXTWATCH_REDIS_URL": settings.redis_url, **extra})
            for key in keys:
                measure(key, urls, args, args.warmup, 0)
            rounds = []
            for number in range(1, args.rounds + 1):
                print(f"round {number}", flush=True)
                results = {}
                for key in keys if number % 2 else keys[::-1]:
                    results[key] = measure(key, urls, args, args.duration, number)
                    print(f"  {NAMES[key]:<30}{results[key].line()}", flush=True)
                rounds.append(results)
            print(f"\nsummary over {len(rounds)} rounds (medians)")
            for key in keys:
                runs = [r[key] for r in rounds]
                print(f"  {NAMES[key]:<30}{statistics.median(r.requests_per_second for r in runs):8.0f} req/s  "
                      f"p50 {statistics.median(r.p50_ms for r in runs):6.2f} ms  "
                      f"p99 {statistics.median(r.p99_ms for r in runs):6.2f} ms")
            for label, numerator, denominator in (("(b3)/(b1)", "b3", "b1"), ("(c3)/(c1)", "c3", "c1")):
                value = statistics.median(r[numerator].requests_per_second / r[denominator].requests_per_second
                                          for r in rounds)
                print(f"  {label} throughput {value:.2f}   target >= {TARGET}   {'PASS' if value >= TARGET else 'GAP'}")
            value = statistics.median(r["c3w"].requests_per_second / r["c3"].requests_per_second for r in rounds)
            print(f"  WAIT 1 costs: (c3w)/(c3) throughput {value:.2f}, p50 "
                  f"{statistics.median(r['c3w'].p50_ms - r['c3'].p50_ms for r in rounds):+.2f} ms, p99 "
                  f"{statistics.median(r['c3w'].p99_ms - r['c3'].p99_ms for r in rounds):+.2f} ms")
            print("\na master SIGKILLed under load (3 client threads, watches with event ids, retried after 503):")
            for name in ("cluster", "durable"):
                outcome = kill_a_master(cluster, on_cluster, urls[name], args.kill_seconds)
                print(f"  {'WAIT 1' if name == 'durable' else 'WAIT 0'}: failover {outcome['failover_s']:.1f} s, "
                      f"longest gap without a 2xx {outcome['gap_s']:.2f} s, {outcome['accepted']} watches "
                      f"accepted, {outcome['lost']} of them lost; answers {outcome['statuses']}", flush=True)
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; every process this benchmark started has been stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
