"""`nextwatch archive` against a real redis-server: every accepted event lands in the archive
exactly once, in its UTC day folder, through SIGKILLs at every step of a write, SIGTERM,
Redis going away, and stream trimming; Spark and the training job read the archive."""

from __future__ import annotations

import collections
import datetime
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from nextwatch.archiving import ArchiveBusy, ArchiveFolder, Archiver, read_group_lag, run_archive
from nextwatch.archiving.files import day_of
from nextwatch.localstack.redis_server import RedisServer
from nextwatch.settings import Settings
from nextwatch.store import Store
from nextwatch.store.event_consumer import EventConsumer

DAY0 = datetime.datetime(2026, 11, 24, tzinfo=datetime.timezone.utc).timestamp()
TITLES = [f"T{i}" for i in range(7)]


def record(store, count: int, start: int = 0, days: int = 3) -> list[str]:
    """``count`` watch events through the real write path; event ``i`` falls on day ``i % days``
    (so every batch spans days) and every other one has an event id. Returns the stream ids."""
    codes = dict(zip(TITLES, store.catalog.register(TITLES)))
    ids = []
    for i in range(start, start + count):
        title = TITLES[i % len(TITLES)]
        stamp = DAY0 + (i % days) * 86_400 + i * 0.001
        recorded = store.users.record_watch(f"U{i % 13}", title, codes[title], stamp, f"E{i}" if i % 2 else None)
        ids.append(recorded.stream_id)
    return ids


def archived(out: Path) -> list[dict]:
    rows = []
    for path in sorted(out.glob("day=*/events-*.parquet")):
        for row in pq.read_table(path).to_pylist():
            rows.append({**row, "folder": path.parent.name})
    return rows


def assert_exactly_once(store, out: Path) -> list[dict]:
    rows = archived(out)
    counts = collections.Counter(row["stream_id"] for row in rows)
    assert [sid for sid, n in counts.items() if n > 1] == []
    logged = list(store.events.read_all())
    assert set(counts) == {event["stream_id"] for event in logged}
    by_id = {row["stream_id"]: row for row in rows}
    for event in logged:  # the archived row is the logged event, in its UTC day folder
        row = by_id[event["stream_id"]]
        assert {k: row[k] for k in event} == event
        assert row["folder"] == f"day={day_of(event['timestamp'])}"
    return rows


def cli_env(settings: Settings, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTWATCH_")}
    env.update(NEXTWATCH_REDIS_URL=settings.redis_url, NEXTWATCH_KEY_PREFIX=settings.key_prefix,
               NEXTWATCH_ARCHIVE_DIR=str(out))
    return env


def start_cli(settings, out, *flags, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nextwatch.cli", "archive", *flags], env=cli_env(settings, out),
                            cwd=out.parent, stdout=subprocess.PIPE, stderr=stderr, text=True)


def run_cli(settings, out, *flags) -> subprocess.CompletedProcess:
    process = start_cli(settings, out, *flags)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    return subprocess.CompletedProcess(process.args, 0, stdout, stderr)


def group_lag(store):
    return read_group_lag(store.client, store.keys, "archiver")


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "archive"


def test_once_archives_every_event_once_into_its_day_folder(settings, store, out):
    config = settings.with_overrides(archive_dir=str(out))
    ids = record(store, 50)
    stats = run_archive(config, batch_size=20, once=True)
    assert (stats.events_written, stats.files_written, stats.duplicates_skipped) == (50, 9, 0)
    rows = assert_exactly_once(store, out)
    assert sorted({row["folder"] for row in rows}) == ["day=2026-11-24", "day=2026-11-25", "day=2026-11-26"]
    # Three batches of 20, 20, 10 events; each batch's day files carry the batch's id range.
    names = {path.name for path in out.glob("day=*/*.parquet")}
    assert names == {f"events-{ids[a]}-{ids[b]}.parquet" for a, b in [(0, 19), (20, 39), (40, 49)]}
    assert [row["event_id"] for row in rows if row["stream_id"] == ids[1]] == ["E1"]
    assert [row["event_id"] for row in rows if row["stream_id"] == ids[2]] == [None]

    assert run_archive(config, once=True).events_written == 0  # drained: nothing new, nothing twice
    record(store, 5, start=50)
    assert run_archive(config, once=True).events_written == 5
    assert_exactly_once(store, out)
    lag = group_lag(store)
    assert (lag.exists, lag.pending, lag.lag, lag.trimmed_unread) == (True, 0, 0, 0)


def test_a_recreated_group_delivers_everything_again_and_nothing_is_archived_twice(settings, store, out):
    config = settings.with_overrides(archive_dir=str(out))
    record(store, 30)
    run_archive(config, batch_size=12, once=True)
    store.client.xgroup_destroy(store.keys.event_log, "archiver")
    stats = run_archive(config, batch_size=5, once=True)  # a new group starts at id 0
    assert (stats.events_written, stats.duplicates_skipped) == (0, 30)
    assert len(assert_exactly_once(store, out)) == 30


def test_once_stops_while_events_keep_coming(settings, store, out):
    config = settings.with_overrides(archive_dir=str(out))
    record(store, 20)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            record(store, 5, start=100)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        stats = run_archive(config, once=True)
    finally:
        stop.set()
        thread.join()
    assert stats.events_written >= 20
    rows = archived(out)
    assert len(rows) == len({row["stream_id"] for row in rows}) == stats.events_written


def test_one_archiver_per_folder(settings, out):
    holder = ArchiveFolder(out)
    holder.lock()
    try:
        with pytest.raises(ArchiveBusy):
            run_archive(settings.with_overrides(archive_dir=str(out)), once=True)
    finally:
        holder.unlock()


# Kills itself with SIGKILL the n-th time the archiver reaches a checkpoint.
CRASHING_ARCHIVER = """
import os, signal, sys
from nextwatch.archiving import run_archive
from nextwatch.settings import load_settings
point, nth, seen = sys.argv[1], int(sys.argv[2]), [0]
def checkpoint(name):
    if name == point:
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
run_archive(load_settings(), batch_size=10, once=True, checkpoint=checkpoint)
"""


@pytest.mark.parametrize("point, nth", [
    ("temp-written", 1),  # first day file of a batch written, not renamed
    ("renamed", 3),  # second batch: first day file renamed, second not: a partial batch on disk
    ("folder-synced", 2),  # first batch: both day files durable, nothing acknowledged
    ("batch-written", 2),  # second batch complete on disk, not acknowledged
    ("acked", 1),  # first batch acknowledged
])  # fmt: skip
def test_sigkill_at_each_step_of_a_write(settings, store, out, point, nth):
    record(store, 30, days=2)
    crashed = subprocess.run([sys.executable, "-c", CRASHING_ARCHIVER, point, str(nth)],
                             env=cli_env(settings, out), capture_output=True, text=True, timeout=30)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    if point == "renamed":
        assert len(list(out.glob("day=*/*.parquet"))) == 3  # batch 1 (two days) + half of batch 2
    # The restart uses another batch size: the half-written batch is rebuilt as it was anyway.
    run_cli(settings, out, "--once", "--batch", "7")
    assert len(assert_exactly_once(store, out)) == 30
    assert not list(out.glob("day=*/.*"))  # no temp file left
    assert group_lag(store).pending == 0


def test_sigkill_at_random_moments_while_events_flow(settings, store, out, tmp_path):
    stop = threading.Event()
    count = [0]

    def writer():
        while not stop.is_set():
            record(store, 10, start=count[0])
            count[0] += 10
            time.sleep(0.02)

    thread = threading.Thread(target=writer)
    thread.start()
    rng = random.Random(7)
    logs = []
    try:
        for round_ in range(6):
            logs.append(tmp_path / f"round-{round_}.log")
            with open(logs[-1], "w") as log:
                process = start_cli(settings, out, "--batch", "40", "--flush-seconds", "0.2", stderr=log)
                # Killed at a random moment once it has started (imports take most of a second).
                wait_for(lambda: "group archiver:" in logs[-1].read_text())
                time.sleep(rng.uniform(0.05, 0.8))
                process.kill()
                process.communicate()
    finally:
        stop.set()
        thread.join()
    run_cli(settings, out, "--once")
    assert len(assert_exactly_once(store, out)) == count[0] > 500
    restarts = "".join(path.read_text() for path in logs[1:])
    assert "pending in group archiver" in restarts  # killed holding a batch, restarted, read it again


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_writes_the_batch_and_exits_0(settings, store, out, signum):
    process = start_cli(settings, out, "--flush-seconds", "60")
    record(store, 40)
    wait_for(lambda: group_lag(store).pending == 40)  # read, held in memory, not written
    assert archived(out) == []
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert "archived 40 events in 3 files" in stdout
    assert len(assert_exactly_once(store, out)) == 40
    assert group_lag(store).pending == 0


def test_redis_going_away_loses_nothing(tmp_path, out, caplog):
    server = RedisServer(tmp_path / "redis", persistent=True).start()
    config = Settings(redis_url=server.url, key_prefix="nwtest", redis_timeout_seconds=0.3, archive_dir=str(out))
    store = Store.from_settings(config)
    consumer = EventConsumer.from_settings(config, "archiver", "archiver", block_seconds=0.2)
    archiver = Archiver(consumer, ArchiveFolder(out), flush_seconds=1.0)
    thread = threading.Thread(target=archiver.run)
    try:
        thread.start()
        record(store, 10)
        wait_for(lambda: group_lag(store).pending == 10)
        server.stop()  # the batch is in memory; it is written while Redis is down ...
        wait_for(lambda: len(archived(out)) == 10)
        wait_for(lambda: "Redis is unreachable" in caplog.text)
        server.start()  # ... and acknowledged once Redis is back (same port, AOF kept the group)
        wait_for(lambda: group_lag(store).pending == 0)
        record(store, 10, start=10)
        wait_for(lambda: len(archived(out)) == 20)
        archiver.stop()
        thread.join(10)
        assert not thread.is_alive()
        assert len(assert_exactly_once(store, out)) == 20
        assert group_lag(store).pending == 0
    finally:
        archiver.stop()
        store.close()
        server.stop()


def test_events_trimmed_before_they_were_read_are_reported(settings, store, redis_client, out, caplog):
    config = settings.with_overrides(archive_dir=str(out))
    record(store, 5)
    run_archive(config, once=True)
    record(store, 5, start=5)
    redis_client.xtrim(store.keys.event_log, maxlen=2, approximate=False)  # the cap catches up
    assert group_lag(store).trimmed_unread == 3
    assert run_archive(config, once=True).events_written == 2
    assert "3 events were trimmed from the stream before the archiver read them" in caplog.text
    assert len(archived(out)) == 7


def test_training_reads_the_archive(settings, store, spark, out):
    """`nextwatch train --events <archive_dir>` reads files through read_event_file: the day=
    folders become a partition column it does not select, hidden temp files are skipped."""
    from nextwatch.training.sources import read_event_file

    record(store, 120)
    run_archive(settings.with_overrides(archive_dir=str(out)), batch_size=50, once=True)
    (out / "day=2026-11-25" / ".events-1-0-2-0.parquet.tmp").write_bytes(b"half a file")  # a crash's leftover
    events = read_event_file(spark, str(out), source_rank=0)
    assert events.columns == ["user_id", "content_id", "timestamp", "stream_id", "seq"]
    assert events.count() == 120
