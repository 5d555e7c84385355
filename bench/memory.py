"""Redis memory per user: a 50-title history plus a cached top-10 prediction (one key).

    .venv/bin/python bench/memory.py [--users 100000] [--through-store 500] [--id-style short|uuid] [--cluster]

Starts a private redis-server without persistence (with ``--cluster``: a Redis Cluster of 3
masters and 3 replicas on loopback, measured on its masters) and writes N synthetic users. The first
``--through-store`` users go through the store's real code (``UserStore.record_watch`` once per
title, then ``save_prediction``); the rest through ``common.write_users``, a pipelined writer
with the same key names, byte encodings and TTLs, checked byte for byte against the real path
first. Bytes per user = (used_memory after - used_memory before) / N, each read with one
client connected and after the allocator settles. The event stream that the real path fills
is DELETED before the "after" reading (its MEMORY USAGE is printed first), so it is excluded.
On a cluster it also prints the keys per master and their largest deviation from the mean
(target: within 10%), which shows how evenly the user shards spread over the masters.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
import uuid

import numpy as np
import redis

from nextwatch.settings import Settings
from nextwatch.store import Store

# Run as a script, so bench/ is on sys.path and its modules import by their plain names.
from common import IMPRESSIONS_AT, Interrupted, Processes, check_bulk_writer, write_users

TARGET_BYTES = 512
# With impressions at the cap: at most 256 bytes more than a user cost before impressions existed
# (492.5 bytes, BENCHMARKS.md of 2026-11-25).
TARGET_WITH_IMPRESSIONS = 492 + 256
TARGET_KEY_SPREAD = 0.10  # keys per master within 10% of the mean, on a cluster


def user_ids(count: int, style: str) -> list[str]:
    if style == "uuid":
        return [str(uuid.UUID(int=i + 1, version=4)) for i in range(count)]
    return [f"U{i}" for i in range(count)]  # as the demo's ids: U999, U1234


def settled_used_memory(clients: list[redis.Redis]) -> int:
    """used_memory (summed over ``clients``, one per node) with only these connections open,
    once two readings 0.3 s apart agree (incremental rehashing of the key tables has finished)."""
    for client in clients:
        client.connection_pool.disconnect()
    previous = -1
    for _ in range(50):
        current = sum(int(client.info("memory")["used_memory"]) for client in clients)
        if current == previous:
            return current
        previous = current
        time.sleep(0.3)
    return current


@contextlib.contextmanager
def redis_under_test(cluster: bool):
    """(redis URL, one plain client per master) of a private redis-server or Redis Cluster."""
    if not cluster:
        with Processes() as processes:
            yield processes.redis.url, [redis.Redis.from_url(processes.redis.url)]
        return
    from nextwatch.local_processes.redis_cluster import LocalRedisCluster

    folder = tempfile.mkdtemp(prefix="nextwatch-memory-cluster-")
    try:
        with LocalRedisCluster(folder).start() as local:
            masters = [redis.Redis(port=node.port) for node in local.nodes() if node.role == "master"]
            yield local.url, masters
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def histories_and_predictions(count: int, titles: int, length: int, top_k: int, rng):
    histories = rng.integers(0, titles, size=(count, length), dtype=np.uint32)
    predictions = rng.integers(0, titles, size=(count, top_k)).tolist()
    return histories, predictions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--through-store", type=int, default=500,
                        help="users written through UserStore.record_watch + save_prediction (default 500)")
    parser.add_argument("--id-style", choices=("short", "uuid"), default="short",
                        help="user ids like U12345 (default) or 36-character UUIDs")
    parser.add_argument("--titles", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--impressions", type=int, default=0, metavar="N",
                        help="also N titles shown to each user (POST /impressions), up to the cap the store keeps "
                             "(14): the bytes a user costs at the cap")
    parser.add_argument("--cluster", action="store_true",
                        help="measure on a Redis Cluster (3 masters, 3 replicas) instead of one redis-server")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    through_store = min(args.through_store, args.users)

    try:
        with redis_under_test(args.cluster) as (url, masters):
            settings = Settings(redis_url=url)
            store = Store.from_settings(settings)
            client, keys = store.client, store.keys
            version = 1
            histories, predictions = histories_and_predictions(
                args.users, args.titles, settings.history_length, settings.cache_top_k, rng)
            # The check also loads the Lua script, so the script cache is in "before" too.
            shown = None
            if args.impressions:
                from nextwatch.store.user_state import MAX_IMPRESSIONS

                count = min(args.impressions, MAX_IMPRESSIONS)
                shown = [rng.choice(args.titles, size=count, replace=False) for _ in range(args.users)]
            problems = check_bulk_writer(store, settings, histories[0], predictions[0], version,
                                         shown[0] if shown is not None else None)
            if problems:
                raise SystemExit("the bulk writer differs from the store's own code: " + "; ".join(problems))
            delete_event_logs(client, keys)
            before = settled_used_memory(masters)

            ids = user_ids(args.users, args.id_style)
            started = time.perf_counter()
            for number, (user_id, history, codes) in enumerate(zip(ids[:through_store], histories, predictions)):
                recorded = None
                for position, code in enumerate(history):
                    recorded = store.users.record_watch(user_id, f"T{int(code):05d}", int(code),
                                                        1.7e9 + position, None)
                for code in shown[number] if shown is not None else ():
                    store.users.record_impressions(user_id, [f"T{int(code):05d}"], [int(code)], IMPRESSIONS_AT, None)
                store.users.save_prediction(user_id, version, recorded.history, codes)
            write_users(client, keys, settings, ids[through_store:], histories[through_store:],
                        predictions[through_store:], version,
                        impressions=shown[through_store:] if shown is not None else None)
            elapsed = time.perf_counter() - started

            stream_bytes = sum(client.memory_usage(log, samples=0) or 0 for log in keys.event_logs())
            stream_length = store.events.length()
            delete_event_logs(client, keys)
            after = settled_used_memory(masters)
            per_user = (after - before) / args.users

            node_stats = [master.memory_stats().get("db.0", {}) for master in masters]
            db = {name: sum(stats.get(name, 0) for stats in node_stats)
                  for name in ("overhead.hashtable.main", "overhead.hashtable.expires")}
            keys_per_master = [master.dbsize() for master in masters]
            samples = [("real path", ids[0]), ("bulk writer", ids[-1])] if through_store else [("bulk writer", ids[-1])]
            where = f"a Redis Cluster of {len(masters)} masters (+1 replica each)" if args.cluster else "one redis-server"
            print(f"redis {masters[0].info('server')['redis_version']} ({where}), allocator "
                  f"{masters[0].info('memory')['mem_allocator']}; {args.users} users "
                  f"({through_store} through record_watch + save_prediction, the rest bulk), "
                  f"ids like {ids[-1]!r}; written in {elapsed:.1f} s")
            print("bulk writer checked against record_watch + save_prediction: identical bytes, TTLs, MEMORY USAGE")
            print(f"event streams ({keys.shards} shards): {stream_length} entries, MEMORY USAGE {stream_bytes} bytes; "
                  "DELETED before the 'after' reading (excluded)")
            print(f"used_memory before {before}  after {after}  delta {after - before}  keys {sum(keys_per_master)}")
            print(f"  of which key tables (dictEntry + key robj + buckets, per MEMORY STATS): main {db.get('overhead.hashtable.main', 0)}, "
                  f"expires {db.get('overhead.hashtable.expires', 0)} bytes "
                  f"({(db.get('overhead.hashtable.main', 0) + db.get('overhead.hashtable.expires', 0)) / args.users:.1f}"
                  " per user)")
            for label, user_id in samples:
                key = keys.user(user_id)
                print(f"  MEMORY USAGE ({label}) {key!r}: {client.memory_usage(key, samples=0)} bytes "
                      f"({client.strlen(key)}-byte value: 50-title history, a cached top-10"
                      f"{f', {len(shown[0])} impressions' if shown is not None else ''})")
            target = TARGET_WITH_IMPRESSIONS if shown is not None else TARGET_BYTES
            print(f"Redis bytes per user: {per_user:.1f}   target < {target}   {'PASS' if per_user < target else 'GAP'}")
            if args.cluster:
                mean = sum(keys_per_master) / len(keys_per_master)
                spread = max(abs(count - mean) for count in keys_per_master) / mean
                print(f"keys per master: {keys_per_master}; largest deviation from the mean {100 * spread:.1f}%   "
                      f"target <= {100 * TARGET_KEY_SPREAD:.0f}%   {'PASS' if spread <= TARGET_KEY_SPREAD else 'GAP'}")
            store.close()
            for master in masters:
                master.close()
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; the private redis-server has been stopped", file=sys.stderr)
        return 130
    return 0


def delete_event_logs(client, keys) -> None:
    for log in keys.event_logs():  # one key per command: on a cluster each is in its own slot
        client.delete(log)


if __name__ == "__main__":
    sys.exit(main())
