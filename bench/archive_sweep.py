"""Archiver cost over the shards: one idle sweep, and events archived per second.

    .venv/bin/python bench/archive_sweep.py [--redis-url redis+cluster://...] [--events 200000] [--rounds 20]

Without --redis-url it starts a private redis-server (never the Redis on 6379); with a cluster
URL it uses that cluster (prefix ``nwbench``, its keys deleted before and after).

1. Idle sweep: the time of one read of new entries over every shard (XREADGROUP + XPENDING per
   shard, one pipeline) when every stream is drained, which is what the archiver repeats while
   idle. On a cluster it is measured twice in interleaved rounds: as the product sends it (each
   XREADGROUP routed to the node of its slot) and as redis-py would on its own (it asks a node
   with COMMAND GETKEYS where each XREADGROUP goes, one round trip per shard).
2. Throughput: ``--events`` entries written straight into the shards' streams (the fields the
   watch script writes), then `nextwatch archive --once` run in-process: events per second and
   files written per batch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

from nextwatch.archiving import run_archive
from nextwatch.local_processes.redis_server import RedisServer
from nextwatch.settings import Settings
from nextwatch.store import Store
from nextwatch.store.event_consumer import EventConsumer

PREFIX = "nwbench"


class UnroutedConsumer(EventConsumer):
    """The same reads, left to redis-py to route (the comparison of part 1)."""

    def _queue_read(self, pipe, key, start, count):
        pipe.execute_command("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count, "STREAMS", key, start)


def clear(store: Store) -> None:
    for key in store.client.scan_iter(match=f"{PREFIX}:*", count=1000):
        store.client.delete(key)


def fill(store: Store, events: int) -> None:
    pipe = store.client.pipeline(transaction=False)
    for i in range(events):
        user = f"u{i % 5000}"
        pipe.xadd(store.keys.user_event_log(user), {"user_id": user, "content_id": f"T{i % 3000}",
                                                   "ts": f"{1795000000 + i * 0.01:.3f}", "event_id": f"e{i}"})
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.execute()


def sweep_ms(consumer: EventConsumer) -> float:
    started = time.perf_counter()
    consumer.read_new(consumer.shards, 16)
    return (time.perf_counter() - started) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", help="a Redis or Redis Cluster to use (default: a private redis-server)")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    server = None
    if args.redis_url is None:
        server = RedisServer(tempfile.mkdtemp(prefix="nextwatch-bench-"), persistent=False).start()
    url = args.redis_url or server.url
    try:
        with tempfile.TemporaryDirectory(prefix="nextwatch-archive-") as archive:
            settings = Settings(redis_url=url, key_prefix=PREFIX, archive_dir=archive)
            store = Store.from_settings(settings, check_layout=False)
            try:
                clear(store)
                print(f"archiver bench: {'cluster' if store.is_cluster else 'single Redis'}, {settings.shards} shards, "
                      f"{args.events} events", flush=True)
                fill(store, args.events)
                started = time.perf_counter()
                stats = run_archive(settings, once=True)
                seconds = time.perf_counter() - started
                batches = -(-stats.events_written // 10_000)
                print(f"archive --once: {stats.events_written} events in {seconds:.2f} s "
                      f"({stats.events_written / seconds:,.0f} events/s), {stats.files_written} files for {batches} "
                      f"batches of up to 10000")
                variants = {"routed": EventConsumer(store.client, store.keys, "archiver", "archiver")}
                if store.is_cluster:
                    variants["unrouted"] = UnroutedConsumer(store.client, store.keys, "archiver", "archiver")
                times: dict[str, list[float]] = {name: [] for name in variants}
                for _ in range(args.rounds):  # interleaved, so both see the same machine load
                    for name, consumer in variants.items():
                        times[name].append(sweep_ms(consumer))
                for name, values in times.items():
                    print(f"idle sweep over {settings.shards} shards, {name}: median {statistics.median(values):.2f} ms, "
                          f"min {min(values):.2f} ms ({args.rounds} rounds)")
            finally:
                clear(store)
                store.close()
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
