"""Redis restarts and archiver crashes under load, with real processes only.

A gunicorn API (several workers), a private redis-server (AOF, appendfsync everysec) and
`nextwatch archive` run as processes; client threads send reads and watches (every watch with
a unique event_id, posted until it is accepted and then posted a second time). During the load
Redis goes away twice and comes back on the same port with the same data folder:

  1. a clean stop (SHUTDOWN NOSAVE: no RDB snapshot, but the AOF is flushed and fsynced):
     nothing accepted may be lost;
  2. SIGKILL of redis-server (a process crash, not a machine crash): what Redis had written to
     the AOF survives in the kernel's page cache, and with everysec it writes the AOF before
     it answers clients, unless a slow fsync made it postpone the write (it then logs
     "Asynchronous AOF fsync is taking too long"). So nothing accepted may be lost either,
     except, when that line is in Redis's log, watches answered in the 2 s before the kill.
     (A machine crash can lose the last second or two; no test here can pull the power.)

Meanwhile the archiver is SIGKILLed at random moments and restarted. Afterwards the events are
read the way `nextwatch train` reads them (the archive folder plus a snapshot of the shards'
streams, merged by training/sources.py's union_events) and compared with what the API accepted.
"""

from __future__ import annotations

import collections
import dataclasses
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import redis

from conftest import DEFAULT_NEIGHBOURS, publish_test_model
from nextwatch.local_processes.redis_server import free_port
from nextwatch.local_processes.supervisor import Supervisor, http_ok
from nextwatch.settings import Settings
from nextwatch.store import Store
from nextwatch.training.sources import read_event_file, union_events, write_event_log

WORKERS = 3
WRITERS, READERS = 4, 3
USERS = 60
TITLES = [f"C{i:03d}" for i in range(200)] + ["C1010", "C1045", "C005"]
DOWN_SECONDS = 2.0  # how long Redis stays away each time
RECOVERY_SECONDS = 3.0  # after Redis answers again, everything must be back to normal by then
SLOWEST_ANSWER = 5.0  # no request may take longer, outage or not (the Redis timeout is 1 s)
POSTPONED_AOF = "Asynchronous AOF fsync is taking too long"


@dataclasses.dataclass
class Attempt:
    kind: str  # "watch" or "read"
    started: float  # time.monotonic()
    ended: float
    status: int  # 0: no HTTP answer at all
    body: object
    headers: dict
    event_id: str | None = None


class LoadClient:
    """Sends requests on fresh connections (so that every worker gets some) and keeps every
    attempt with its status, answer, headers and timing."""

    def __init__(self, port: int):
        self.port = port
        self.attempts: list[Attempt] = []  # list.append is atomic: shared by the threads
        self.first_answers: dict[str, dict] = {}
        self.mismatched: list[tuple[str, dict, dict]] = []
        self.abandoned: list[str] = []

    def send(self, kind: str, method: str, path: str, body: dict | None = None) -> Attempt:
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            connection.request(method, path, payload, {"Content-Type": "application/json"} if payload else {})
            response = connection.getresponse()
            raw = response.read()
            # Header names are case-insensitive; granian sends them in lower case.
            status, headers = response.status, {name.lower(): value for name, value in response.getheaders()}
            try:
                answer = json.loads(raw)
            except ValueError:
                answer = raw
        except OSError as problem:
            status, headers, answer = 0, {}, repr(problem)
        finally:
            connection.close()
        attempt = Attempt(kind, started, time.monotonic(), status, answer, headers,
                          body.get("event_id") if body else None)
        self.attempts.append(attempt)
        return attempt

    def watch_until_accepted(self, event: dict, deadline: float) -> dict | None:
        """Posts the event until it is accepted, as a client that keeps its events does."""
        while time.monotonic() < deadline:
            attempt = self.send("watch", "POST", "/watched", event)
            if 200 <= attempt.status < 300:
                return attempt.body
            time.sleep(0.2)  # sooner than Retry-After asks: the test wants pressure
        return None

    def writer(self, number: int, stop: threading.Event, rng: random.Random) -> None:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            event = {"user_id": f"U{rng.randrange(USERS)}", "content_id": rng.choice(TITLES),
                     "event_id": f"w{number}-{sequence}"}
            deadline = time.monotonic() + 30
            first = self.watch_until_accepted(event, deadline)
            second = self.watch_until_accepted(event, deadline) if first is not None else None
            if second is None:
                self.abandoned.append(event["event_id"])
                continue
            self.first_answers[event["event_id"]] = first
            if second != first:
                self.mismatched.append((event["event_id"], first, second))

    def reader(self, stop: threading.Event, rng: random.Random) -> None:
        while not stop.is_set():
            self.send("read", "GET", f"/recommend/U{rng.randrange(USERS + 20)}")
            time.sleep(0.005)


def worker_pids(master: int) -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rpartition(")")[2].split()[1]) == master:
                        pids.add(int(entry))
            except OSError:
                pass
    return pids


class ArchiverChaos(threading.Thread):
    """Starts `nextwatch archive`, SIGKILLs it at a random moment once it runs, starts it again."""

    def __init__(self, env: dict, logs: Path, rng: random.Random):
        super().__init__(daemon=True)
        self.env, self.logs, self.rng = env, logs, rng
        self.stopping = threading.Event()
        self.kills = 0
        self.process: subprocess.Popen | None = None

    def run(self) -> None:
        while not self.stopping.is_set():
            log = self.logs / f"archiver-{self.kills}.log"
            with open(log, "w") as handle:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "nextwatch.cli", "archive", "--batch", "40", "--flush-seconds", "0.3"],
                    env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
            started = time.monotonic()
            while "archive " not in log.read_text() and time.monotonic() - started < 20:
                if self.stopping.wait(0.05):
                    break
            self.stopping.wait(self.rng.uniform(0.05, 2.0))
            self.process.kill()
            self.process.wait()
            self.kills += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


def test_redis_restarts_and_archiver_crashes_under_load(private_redis, spark, tmp_path):
    rng = random.Random(11)
    settings = Settings(redis_url=private_redis.url)
    store = Store.from_settings(settings)
    publish_test_model(store, DEFAULT_NEIGHBOURS)
    out = tmp_path / "archive"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTWATCH_")}
    env.update(NEXTWATCH_REDIS_URL=private_redis.url, NEXTWATCH_ARCHIVE_DIR=str(out))
    port = free_port()
    supervisor = Supervisor()
    chaos = ArchiverChaos(env, tmp_path, rng)
    client = LoadClient(port)
    stop = threading.Event()
    threads = [threading.Thread(target=client.writer, args=(n, stop, random.Random(n))) for n in range(WRITERS)]
    threads += [threading.Thread(target=client.reader, args=(stop, random.Random(100 + n))) for n in range(READERS)]
    outages = []  # (how, Redis gone at, restarted at, answering again at)
    try:
        api = supervisor.start("api", [sys.executable, "-m", "nextwatch.cli", "serve", "--port", str(port),
                                       "--workers", str(WORKERS)],
                               {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")},
                               ready=http_ok(f"http://127.0.0.1:{port}/readyz"))
        chaos.start()
        for thread in threads:
            thread.start()
        time.sleep(4)
        workers = worker_pids(api.pid)
        assert len(workers) == WORKERS

        gone = time.monotonic()
        redis.Redis.from_url(private_redis.url).shutdown(nosave=True)
        private_redis.process.wait(10)
        time.sleep(DOWN_SECONDS)
        restarted = time.monotonic()
        private_redis.start()
        outages.append(("SHUTDOWN NOSAVE", gone, restarted, time.monotonic()))
        time.sleep(6)

        gone = time.monotonic()
        private_redis.process.kill()
        private_redis.process.wait(10)
        time.sleep(DOWN_SECONDS)
        restarted = time.monotonic()
        private_redis.start()
        outages.append(("SIGKILL", gone, restarted, time.monotonic()))
        time.sleep(6)

        stop.set()  # writers finish the event in hand: posted until accepted, then once more
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
        assert worker_pids(api.pid) == workers  # the API was never restarted, no worker replaced
        chaos.stop()
        drained = subprocess.run([sys.executable, "-m", "nextwatch.cli", "archive", "--once"], env=env,
                                 capture_output=True, text=True, timeout=60)
        assert drained.returncode == 0, drained.stderr
    finally:
        stop.set()
        chaos.stop()
        if chaos.process is not None and chaos.process.poll() is None:
            chaos.process.kill()
        supervisor.stop_all()

    attempts = client.attempts
    watches = [a for a in attempts if a.kind == "watch"]
    reads = [a for a in attempts if a.kind == "read"]
    statuses = collections.Counter((a.kind, a.status) for a in attempts)
    print(f"\n{len(attempts)} requests: {dict(statuses)}; {len(client.first_answers)} events accepted; "
          f"archiver killed {chaos.kills} times; Redis away {[(o[0], round(o[3] - o[1], 2)) for o in outages]} s")

    assert chaos.kills >= 3

    # Every request got an HTTP answer, none a 500, none slowly; reads always 200.
    assert [a for a in attempts if a.status in (0, 500)] == []
    assert max(a.ended - a.started for a in attempts) < SLOWEST_ANSWER
    assert {a.status for a in reads} == {200}
    assert {a.status for a in watches} <= {200, 409, 503}
    for attempt in attempts:
        if attempt.status in (409, 503):
            assert int(attempt.headers["retry-after"]) >= 1
            assert attempt.headers["content-type"] == "application/json"
            assert attempt.body["error"] in ("store_unavailable", "event_in_flight"), attempt.body

    # Each outage was seen (writes refused, reads degraded), and serving came back by itself.
    for how, gone, restarted, back in outages:
        during = [a for a in attempts if a.started > gone + 0.2 and a.ended < restarted]
        assert {a.status for a in during if a.kind == "watch"} == {503}, how
        assert [(a.started - gone, a.ended - gone, a.body) for a in during
                if a.kind == "read" and not a.body.get("degraded")] == [], how
        first_write = min(a.ended for a in watches if a.started >= back and a.status == 200)
        first_read = min(a.ended for a in reads if a.started >= back and not a.body.get("degraded"))
        assert max(first_write, first_read) - back < RECOVERY_SECONDS, how
        assert any(a.started > back + RECOVERY_SECONDS for a in watches), how
    # Outside the outages and their recovery time, every answer was a normal 200.
    normal = [a for a in attempts if all(a.ended < gone or a.started > back + RECOVERY_SECONDS
                                         for _how, gone, _restarted, back in outages)]
    assert [(a.kind, a.status, a.body) for a in normal if a.status != 200 or a.body.get("degraded")] == []

    # Every event was accepted in the end, and a second post got the first answer.
    assert client.abandoned == []
    assert client.mismatched == []

    # What training reads: the archive plus the streams, merged on (shard, stream id).
    archived = [row for path in sorted(out.glob("day=*/events-*.parquet")) for row in pq.read_table(path).to_pylist()]
    archive_ids = collections.Counter((row["shard"], row["stream_id"]) for row in archived)
    assert [key for key, n in archive_ids.items() if n > 1] == []  # the archiver wrote each event once
    logged = list(store.events.read_all())
    assert {(e["shard"], e["stream_id"]) for e in logged} <= set(archive_ids)  # drained: all archived
    snapshot = str(tmp_path / "event-log.parquet")
    assert write_event_log(logged, snapshot) == len(logged)
    frames = [read_event_file(spark, str(out), source_rank=0), read_event_file(spark, snapshot, source_rank=1)]
    trained_on = [(row.shard, row.stream_id) for row in union_events(frames).select("shard", "stream_id").collect()]
    assert len(trained_on) == len(set(trained_on)) == len(archive_ids)
    event_of = {(row["shard"], row["stream_id"]): row["event_id"] for row in [*archived, *logged]}
    recorded = collections.Counter(event_of[key] for key in trained_on)
    accepted = set(client.first_answers)

    at_risk = set()  # only if Redis had postponed an AOF write before the SIGKILL (see above)
    if POSTPONED_AOF in (private_redis.data_dir / "redis.log").read_text():
        killed = outages[1][1]
        at_risk = {a.event_id for a in watches if a.status == 200 and killed - 2.5 <= a.ended <= killed}
        print(f"Redis logged a postponed AOF write; {len(at_risk)} events answered in the 2 s before SIGKILL")
    assert {e for e, n in recorded.items() if n > 1} - at_risk == set()  # nothing counted twice
    assert accepted - set(recorded) - at_risk == set()  # nothing accepted lost
    assert set(recorded) - accepted == set()  # nothing recorded that was not sent and accepted
    store.close()
