"""`nextwatch archive` against real Redis (one redis-server, and a Redis Cluster where BACKENDS
names it): every accepted event of every shard lands in the archive exactly once, in its UTC
day folder, through SIGKILLs at every step of a write, SIGTERM, Redis going away, groups
destroyed in some shards, FLUSHALL and stream trimming; a flush writes one file per day however
many shards it holds; Spark and the training job read the archive."""

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

from nextwatch.archiving import ArchiveBusy, ArchiveFolder, Archiver, ArchiveUnusable, BatchRecord, read_group_lag, run_archive
from nextwatch.archiving.files import day_of
from nextwatch.errors import StoreUnavailable
from nextwatch.local_processes.redis_server import RedisServer
from nextwatch.settings import Settings
from nextwatch.store import Store
from nextwatch.store.event_consumer import EventConsumer

BACKENDS = ["redis", "cluster"]  # the cluster: tests/conftest.py's clean_cluster (3 masters, 3 replicas)
DAY0 = datetime.datetime(2026, 11, 24, tzinfo=datetime.timezone.utc).timestamp()
TITLES = [f"T{i}" for i in range(7)]


@pytest.fixture(params=BACKENDS)
def settings(request, tmp_path) -> Settings:
    """Overrides conftest's: one redis-server or a Redis Cluster, 64 shards (the default)."""
    server = request.getfixturevalue("clean_cluster" if request.param == "cluster" else "redis_server")
    return Settings(redis_url=server.url, key_prefix="nwtest", archive_dir=str(tmp_path / "archive"),
                    history_length=50, sequence_model="off")


@pytest.fixture
def store(settings):
    store = Store.from_settings(settings, check_layout=False)
    store.client.flushall()  # every master of a cluster
    yield store
    store.close()


@pytest.fixture
def out(settings) -> Path:
    return Path(settings.archive_dir)


def record(store, count: int, start: int = 0, days: int = 3, users: int = 13) -> list[tuple[int, str]]:
    """``count`` watch events through the real write path, by ``users`` users (so over that many
    shards, at most); event ``i`` falls on day ``i % days`` (so batches span days) and every other
    one has an event id. Returns the (shard, stream id) of each."""
    codes = dict(zip(TITLES, store.catalog.register(TITLES)))
    ids = []
    for i in range(start, start + count):
        title, user = TITLES[i % len(TITLES)], f"U{i % users}"
        stamp = DAY0 + (i % days) * 86_400 + i * 0.001
        recorded = store.users.record_watch(user, title, codes[title], stamp, f"E{i}" if i % 2 else None)
        ids.append((store.keys.shard_of(user), recorded.stream_id))
    return ids


def archived(out: Path) -> list[dict]:
    rows = []
    for path in sorted(out.glob("day=*/events-*.parquet")):
        for row in pq.read_table(path).to_pylist():
            rows.append({**row, "folder": path.parent.name})
    return rows


def assert_exactly_once(store, out: Path) -> list[dict]:
    rows = archived(out)
    counts = collections.Counter((row["shard"], row["stream_id"]) for row in rows)
    assert [key for key, n in counts.items() if n > 1] == []
    logged = list(store.events.read_all())
    assert set(counts) == {(event["shard"], event["stream_id"]) for event in logged}
    by_key = {(row["shard"], row["stream_id"]): row for row in rows}
    for event in logged:  # the archived row is the logged event, in its UTC day folder
        row = by_key[event["shard"], event["stream_id"]]
        assert {k: row[k] for k in event} == event
        assert row["folder"] == f"day={day_of(event['timestamp'])}"
    return rows


def records(out: Path) -> dict[int, BatchRecord]:
    """Every batch's record, checked to be the same in each of its files."""
    found: dict[int, BatchRecord] = {}
    for path in out.glob("day=*/events-*.parquet"):
        record = BatchRecord.from_file(path)
        assert found.setdefault(record.number, record) == record
        assert path.name == record.file_name and path.parent.name[len("day="):] in record.days
    return found


def cli_env(settings: Settings, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTWATCH_")}
    env.update(NEXTWATCH_REDIS_URL=settings.redis_url, NEXTWATCH_KEY_PREFIX=settings.key_prefix,
               NEXTWATCH_ARCHIVE_DIR=str(out))
    return env


def start_cli(settings, out, *flags, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nextwatch.cli", "archive", *flags], env=cli_env(settings, out),
                            cwd=out.parent, stdout=subprocess.PIPE, stderr=stderr, text=True)


def run_cli(settings, out, *flags, code: int = 0) -> subprocess.CompletedProcess:
    process = start_cli(settings, out, *flags)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    return subprocess.CompletedProcess(process.args, code, stdout, stderr)


def group_lag(store):
    return read_group_lag(store.client, store.keys, "archiver")


def wait_for(condition, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class ArchiverThread:
    """An archiver running in this process (its own connection), for tests that change Redis
    under it."""

    def __init__(self, settings: Settings, out: Path, **options):
        self.consumer = EventConsumer.from_settings(settings, "archiver", "archiver")
        self.archiver = Archiver(self.consumer, ArchiveFolder(out), **options)
        self.thread = threading.Thread(target=self.archiver.run)

    def __enter__(self) -> Archiver:
        self.thread.start()
        return self.archiver

    def __exit__(self, *exc) -> None:
        self.archiver.stop()
        self.thread.join(15)
        self.consumer.close()
        assert not self.thread.is_alive()


def test_once_archives_every_event_once_into_its_day_folder(settings, store, out):
    ids = record(store, 50)
    stats = run_archive(settings, batch_size=20, once=True)
    # Three batches of 20, 20, 10 events from up to 13 shards, each one file per day: 9 files.
    assert (stats.events_written, stats.files_written, stats.duplicates_skipped) == (50, 9, 0)
    rows = assert_exactly_once(store, out)
    assert sorted({row["folder"] for row in rows}) == ["day=2026-11-24", "day=2026-11-25", "day=2026-11-26"]
    assert {path.name for path in out.glob("day=*/*.parquet")} == {f"events-{n:012d}.parquet" for n in (1, 2, 3)}
    assert [row["event_id"] for row in rows if (row["shard"], row["stream_id"]) == ids[1]] == ["E1"]
    assert [row["event_id"] for row in rows if (row["shard"], row["stream_id"]) == ids[2]] == [None]
    # Each record: per shard, the batch's id range holds exactly that shard's rows of the batch,
    # and ``through`` is the newest id archived so far in every shard.
    batches = records(out)
    assert sorted(batches) == [1, 2, 3]
    through: dict[int, str] = {}
    for number, batch in sorted(batches.items()):
        mine = collections.defaultdict(list)
        for path in out.glob(f"day=*/{batch.file_name}"):
            for row in pq.read_table(path).to_pylist():
                mine[row["shard"]].append(row["stream_id"])
        assert len(mine) > 1  # a batch mixes shards
        for shard, stream_ids in mine.items():
            ordered = sorted(stream_ids, key=lambda i: tuple(map(int, i.split("-"))))
            assert batch.ranges[shard] == (ordered[0], ordered[-1])
            through[shard] = ordered[-1]
        assert batch.through == through

    assert run_archive(settings, once=True).events_written == 0  # drained: nothing new, nothing twice
    record(store, 5, start=50)
    assert run_archive(settings, once=True).events_written == 5
    assert_exactly_once(store, out)
    lag = group_lag(store)
    assert (lag.exists, lag.pending, lag.lag, lag.trimmed_unread) == (True, 0, 0, 0)
    assert len(lag.by_shard) == 64


def test_once_over_many_shards_writes_one_file_per_day_per_batch(settings, store, out):
    shards = {shard for shard, _ in record(store, 400, days=1, users=300)}
    assert len(shards) == 64
    result = run_cli(settings, out, "--once", "--batch", "100")
    assert "archived 400 events in 4 files" in result.stdout
    rows = assert_exactly_once(store, out)
    assert {row["shard"] for row in rows} == shards
    assert all(len(batch.ranges) >= 10 for batch in records(out).values())  # many shards in each file


def test_a_recreated_group_delivers_everything_again_and_nothing_is_archived_twice(settings, store, out):
    record(store, 30)
    run_archive(settings, batch_size=12, once=True)
    for stream in store.keys.event_logs():
        store.client.xgroup_destroy(stream, "archiver")
    stats = run_archive(settings, batch_size=5, once=True)  # a new group starts at id 0 in every shard
    assert (stats.events_written, stats.duplicates_skipped) == (0, 30)
    assert len(assert_exactly_once(store, out)) == 30


def test_a_shard_whose_group_was_destroyed_under_a_running_archiver(settings, store, out, caplog):
    first = record(store, 30)
    gone = sorted({store.keys.shard_of("U0"), store.keys.shard_of("U1")})
    with ArchiverThread(settings, out, flush_seconds=0.2) as archiver:
        wait_for(lambda: len(archived(out)) == 30 and group_lag(store).pending == 0)
        for shard in gone:
            store.client.xgroup_destroy(store.keys.event_log(shard), "archiver")
        record(store, 30, start=30)
        wait_for(lambda: len(archived(out)) == 60 and group_lag(store).exists and group_lag(store).pending == 0)
    assert len(assert_exactly_once(store, out)) == 60
    assert "consumer group archiver vanished" in caplog.text
    # The new groups delivered those shards' archived entries again: skipped, each once.
    assert archiver.stats.duplicates_skipped == sum(1 for shard, _ in first if shard in gone)
    assert archiver.stats.events_written == 60


def test_flushall_under_a_running_archiver_keeps_what_it_held(settings, store, out):
    """After FLUSHALL the events the archiver holds in memory exist nowhere else: the missing
    groups make it write them out before it creates the groups again."""
    held = record(store, 20)
    with ArchiverThread(settings, out, flush_seconds=60) as archiver:
        wait_for(lambda: group_lag(store).pending == 20)
        assert archived(out) == []
        store.client.flushall()
        wait_for(lambda: len(archived(out)) == 20)
        later = record(store, 5, start=20)
        wait_for(lambda: group_lag(store).exists and group_lag(store).pending == 5)
    rows = archived(out)
    assert sorted((row["shard"], row["stream_id"]) for row in rows) == sorted(held + later)
    assert archiver.stats.events_written == 25


def test_a_group_reset_behind_the_archivers_back(settings, store, out, caplog):
    """Groups destroyed and created again at the end of the streams while the archiver holds a
    batch: its held entries are no longer pending anywhere, which the pending count after a
    read shows; it writes them out and carries on with the new groups."""
    held = record(store, 20)
    with ArchiverThread(settings, out, flush_seconds=60) as archiver:
        wait_for(lambda: group_lag(store).pending == 20)
        for stream in store.keys.event_logs():  # each in one MULTI: the archiver sees no NOGROUP
            reset = store.client.pipeline(transaction=True)
            reset.xgroup_destroy(stream, "archiver")
            reset.xgroup_create(stream, "archiver", id="$")
            reset.execute()
        wait_for(lambda: len(archived(out)) == 20)
        later = record(store, 5, start=20)
        wait_for(lambda: group_lag(store).pending == 5)
    assert "consumer group archiver vanished" in caplog.text
    assert sorted((row["shard"], row["stream_id"]) for row in archived(out)) == sorted(held + later)
    assert archiver.stats.events_written == 25


def test_once_stops_while_events_keep_coming(settings, store, out):
    record(store, 20)
    stop = threading.Event()
    written = [20]

    def writer():
        while not stop.is_set():
            record(store, 5, start=written[0])
            written[0] += 5

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        stats = run_archive(settings, once=True)
    finally:
        stop.set()
        thread.join()
    assert written[0] > 20 and 20 <= stats.events_written <= written[0]
    rows = archived(out)
    assert len(rows) == len({(row["shard"], row["stream_id"]) for row in rows}) == stats.events_written


def test_one_archiver_per_folder(settings, out):
    holder = ArchiveFolder(out)
    holder.lock()
    try:
        with pytest.raises(ArchiveBusy):
            run_archive(settings, once=True)
    finally:
        holder.unlock()


def test_a_folder_of_the_single_stream_archiver_is_refused(settings, store, out):
    """Its stream ids cannot be told apart from the per-shard ones, so nothing is added to it."""
    (out / "day=2026-11-24").mkdir(parents=True)
    (out / "day=2026-11-24" / "events-1795558684445-0-1795558689012-3.parquet").write_bytes(b"old")
    result = run_cli(settings, out, "--once", code=2)
    assert "files of the single-stream archiver" in result.stderr
    with pytest.raises(ArchiveUnusable):
        run_archive(settings, once=True)


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


def crash_at(settings, out, point: str, nth: int) -> None:
    crashed = subprocess.run([sys.executable, "-c", CRASHING_ARCHIVER, point, str(nth)],
                             env=cli_env(settings, out), capture_output=True, text=True, timeout=60)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr


@pytest.mark.parametrize("point, nth", [
    ("temp-written", 1),  # first day file of the first batch written, not renamed
    ("temps-synced", 2),  # second batch: every temp file durable, none renamed
    ("renamed", 3),  # second batch: one day file renamed, the other still a temp file
    ("folder-synced", 2),  # first batch: both day files durable, nothing acknowledged
    ("batch-written", 2),  # second batch complete on disk, not acknowledged
    ("acked", 1),  # first batch acknowledged in every shard
])  # fmt: skip
def test_sigkill_at_each_step_of_a_write(settings, store, out, point, nth):
    ids = record(store, 30, days=2)
    assert len({shard for shard, _ in ids}) >= 8  # the batches interleave many shards
    crash_at(settings, out, point, nth)
    temps = sorted(out.glob("day=*/.events-*.tmp"))
    if point == "renamed":  # a batch cut short in its renames: the newest batch, with a temp file left
        newest = max(records(out))
        assert temps and all(path.name == f".events-{newest:012d}.parquet.tmp" for path in temps)
    # The restart uses another batch size: what a crash left is finished or discarded as it was.
    restart = run_cli(settings, out, "--once", "--batch", "7")
    if point == "renamed":
        assert f"{len(temps)} temp files renamed to finish it" in restart.stderr
    assert len(assert_exactly_once(store, out)) == 30
    assert not list(out.glob("day=*/.*"))  # no temp file left
    assert group_lag(store).pending == 0
    batches = records(out)
    assert sorted(batches) == list(range(1, len(batches) + 1))


def test_a_written_batch_delivered_again_is_skipped_per_shard(settings, store, out):
    """Killed after the batch's files are durable, before any XACK; then some shards' entries are
    acknowledged (as when the kill falls between the shards' XACKs): on restart the rest are
    skipped as archived, shard by shard, and nothing is written again."""
    ids = record(store, 30, days=2)
    crash_at(settings, out, "batch-written", 1)
    first = records(out)[1]
    in_batch = [(shard, sid) for shard, sid in ids if first.archived(shard, sid)]
    assert len(in_batch) == 10 and len(first.ranges) > 2
    acked_shards = sorted(first.ranges)[: len(first.ranges) // 2]
    for shard in acked_shards:
        store.client.xack(store.keys.event_log(shard), "archiver", *[sid for s, sid in in_batch if s == shard])
    files_before = sorted(out.glob("day=*/events-*.parquet"))
    stats = run_archive(settings, once=True)
    assert stats.duplicates_skipped == sum(1 for shard, _ in in_batch if shard not in acked_shards)
    assert stats.events_written == 20
    assert set(files_before) <= set(out.glob("day=*/events-*.parquet"))
    assert len(assert_exactly_once(store, out)) == 30


def test_the_same_stream_id_in_two_shards_is_two_events(settings, store, out, spark):
    """Stream ids are unique only within a shard: the dedupe (archiver) and the training merge
    (union_events) go by shard and stream id."""
    from nextwatch.training.sources import read_event_file, union_events, write_event_log

    left, right = store.keys.event_log(3), store.keys.event_log(40)
    for stream, user in ((left, "A"), (right, "B")):
        store.client.xadd(stream, {"user_id": user, "content_id": "T1", "ts": "1795000000.5"}, id="1795000000500-0")
    run_archive(settings, once=True)
    store.client.xadd(right, {"user_id": "B", "content_id": "T2", "ts": "1795000001.5"}, id="1795000001500-0")
    for stream in (left, right):
        store.client.xgroup_destroy(stream, "archiver")
    stats = run_archive(settings, once=True)
    assert (stats.duplicates_skipped, stats.events_written) == (2, 1)
    rows = assert_exactly_once(store, out)
    assert sorted((row["shard"], row["stream_id"], row["user_id"]) for row in rows) == [
        (3, "1795000000500-0", "A"), (40, "1795000000500-0", "B"), (40, "1795000001500-0", "B")]

    snapshot = str(out.parent / "event-log.parquet")
    assert write_event_log(store.events.read_all(), snapshot) == 3
    frames = [read_event_file(spark, str(out), source_rank=0), read_event_file(spark, snapshot, source_rank=1)]
    merged = sorted(tuple(row) for row in union_events(frames).select("shard", "stream_id", "user_id").collect())
    assert merged == [(3, "1795000000500-0", "A"), (40, "1795000000500-0", "B"), (40, "1795000001500-0", "B")]


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


def test_redis_going_away_loses_nothing(tmp_path, caplog):
    out = tmp_path / "archive"
    server = RedisServer(tmp_path / "redis", persistent=True).start()
    config = Settings(redis_url=server.url, key_prefix="nwtest", redis_timeout_seconds=0.3, archive_dir=str(out))
    store = Store.from_settings(config)
    try:
        with ArchiverThread(config, out, flush_seconds=1.0):
            record(store, 10)
            wait_for(lambda: group_lag(store).pending == 10)
            server.stop()  # the batch is in memory; it is written while Redis is down ...
            wait_for(lambda: len(archived(out)) == 10)
            wait_for(lambda: "Redis is unreachable" in caplog.text)
            server.start()  # ... and acknowledged once Redis is back (same port, AOF kept the group)
            wait_for(lambda: group_lag(store).pending == 0)
            record(store, 10, start=10)
            wait_for(lambda: len(archived(out)) == 20)
        assert len(assert_exactly_once(store, out)) == 20
        assert group_lag(store).pending == 0
    finally:
        store.close()
        server.stop()


def test_events_trimmed_before_they_were_read_are_reported(settings, store, out, caplog):
    record(store, 5, users=1)
    run_archive(settings, once=True)
    record(store, 5, start=5, users=1)
    store.client.xtrim(store.keys.event_log(store.keys.shard_of("U0")), maxlen=2, approximate=False)
    assert group_lag(store).trimmed_unread == 3
    assert run_archive(settings, once=True).events_written == 2
    assert "3 events were trimmed from the streams before group archiver read them" in caplog.text
    assert len(archived(out)) == 7


def test_training_reads_the_archive(settings, store, spark, out):
    """`nextwatch train --events <archive_dir>` reads files through read_event_file: the day=
    folders become a partition column it does not select, hidden temp files are skipped."""
    from nextwatch.training.sources import read_event_file

    record(store, 120)
    run_archive(settings, batch_size=50, once=True)
    (out / "day=2026-11-25" / ".events-000000000009.parquet.tmp").write_bytes(b"half a file")  # a crash's leftover
    events = read_event_file(spark, str(out), source_rank=0)
    assert events.columns == ["user_id", "content_id", "timestamp", "stream_id", "shard", "seq"]
    assert events.count() == 120
    assert events.select("shard", "stream_id").distinct().count() == 120


def test_a_master_failover_under_a_running_archiver(clean_cluster, tmp_path, caplog):
    """A Redis Cluster whose master of one shard's slot is SIGKILLed while watches flow and the
    archiver runs: the archiver backs off, finds the promoted replica and carries on, and every
    event the cluster still holds is archived once. (Replication is asynchronous: the failover
    may lose the newest writes of the dead master; those archived before it stay archived.)"""
    settings = Settings(redis_url=clean_cluster.url, key_prefix="nwtest", archive_dir=str(tmp_path / "archive"))
    out = Path(settings.archive_dir)
    store = Store.from_settings(settings)
    codes = dict(zip(TITLES, store.catalog.register(TITLES)))
    stop, written = threading.Event(), [0]

    def writer():
        while not stop.is_set():
            i = written[0]
            try:
                store.users.record_watch(f"U{i % 13}", "T1", codes["T1"], DAY0 + i * 0.001, f"E{i}")
                written[0] += 1
            except StoreUnavailable:
                time.sleep(0.05)  # the slot's master is gone until its replica takes over

    stream = store.keys.user_event_log("U0")
    thread = threading.Thread(target=writer)
    try:
        with ArchiverThread(settings, out, flush_seconds=0.2):
            thread.start()
            try:
                wait_for(lambda: len(archived(out)) >= 100, 60)
                clean_cluster.kill(clean_cluster.master_for_key(stream))
                clean_cluster.wait_for_failover(clean_cluster.keyslot(stream))
                after = written[0]
                wait_for(lambda: written[0] > after + 200, 60)
            finally:
                stop.set()
                thread.join()
            wait_for(lambda: (lag := group_lag(store)).exists and lag.pending == 0 and lag.lag == 0, 60)
        counts = collections.Counter((row["shard"], row["stream_id"]) for row in archived(out))
        assert [key for key, n in counts.items() if n > 1] == []
        assert {(e["shard"], e["stream_id"]) for e in store.events.read_all()} <= set(counts)
        assert "Redis is unreachable" in caplog.text  # it saw the failure, and recovered by itself
    finally:
        store.close()
