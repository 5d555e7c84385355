"""Redis memory per user: a 50-title history plus a cached top-10 prediction.

    .venv/bin/python bench/memory.py [--users 100000] [--through-store 500] [--id-style short|uuid]

Starts a private redis-server without persistence and writes N synthetic users. The first
``--through-store`` users go through the store's real code (``UserStore.record_watch`` once per
title, then ``save_prediction``); the rest through ``common.write_users``, a pipelined writer
with the same key names, byte encodings and TTLs, checked byte for byte against the real path
first. Bytes per user = (used_memory after - used_memory before) / N, each read with one
client connected and after the allocator settles. The event stream that the real path fills
is DELETED before the "after" reading (its MEMORY USAGE is printed first), so it is excluded.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

import numpy as np
import redis

from nextwatch.settings import Settings
from nextwatch.store import Store

# Run as a script, so bench/ is on sys.path and its modules import by their plain names.
from common import Interrupted, Processes, check_bulk_writer, write_users

TARGET_BYTES = 512


def user_ids(count: int, style: str) -> list[str]:
    if style == "uuid":
        return [str(uuid.UUID(int=i + 1, version=4)) for i in range(count)]
    return [f"U{i}" for i in range(count)]  # as the demo's ids: U999, U1234


def settled_used_memory(client: redis.Redis) -> int:
    """used_memory with only this client's connection open, once two readings 0.3 s apart agree
    (incremental rehashing of the key tables has finished)."""
    client.connection_pool.disconnect()
    previous = -1
    for _ in range(50):
        current = int(client.info("memory")["used_memory"])
        if current == previous:
            return current
        previous = current
        time.sleep(0.3)
    return current


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
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    through_store = min(args.through_store, args.users)

    try:
        with Processes() as processes:
            settings = Settings(redis_url=processes.redis.url)
            store = Store.from_settings(settings)
            client, keys = store.client, store.keys
            version = 1
            histories, predictions = histories_and_predictions(
                args.users, args.titles, settings.history_length, settings.cache_top_k, rng)
            # The check also loads the Lua script, so the script cache is in "before" too.
            problems = check_bulk_writer(store, settings, histories[0], predictions[0], version)
            if problems:
                raise SystemExit("the bulk writer differs from the store's own code: " + "; ".join(problems))
            client.delete(keys.event_log)
            before = settled_used_memory(client)

            ids = user_ids(args.users, args.id_style)
            started = time.perf_counter()
            for user_id, history, codes in zip(ids[:through_store], histories, predictions):
                recorded = None
                for position, code in enumerate(history):
                    recorded = store.users.record_watch(user_id, f"T{int(code):05d}", int(code),
                                                        1.7e9 + position, None)
                store.users.save_prediction(user_id, version, recorded.history, codes)
            write_users(client, keys, settings, ids[through_store:], histories[through_store:],
                        predictions[through_store:], version)
            elapsed = time.perf_counter() - started

            stream_bytes = client.memory_usage(keys.event_log, samples=0) or 0
            stream_length = client.xlen(keys.event_log)
            client.delete(keys.event_log)
            after = settled_used_memory(client)
            per_user = (after - before) / args.users

            stats = client.memory_stats()
            db = stats.get("db.0", {})
            samples = [("real path", ids[0]), ("bulk writer", ids[-1])] if through_store else [("bulk writer", ids[-1])]
            print(f"redis {client.info('server')['redis_version']}, allocator "
                  f"{client.info('memory')['mem_allocator']}; {args.users} users "
                  f"({through_store} through record_watch + save_prediction, the rest bulk), "
                  f"ids like {ids[-1]!r}; written in {elapsed:.1f} s")
            print("bulk writer checked against record_watch + save_prediction: identical bytes, TTLs, MEMORY USAGE")
            print(f"event stream {keys.event_log!r}: {stream_length} entries, MEMORY USAGE {stream_bytes} bytes; "
                  "DELETED before the 'after' reading (excluded)")
            print(f"used_memory before {before}  after {after}  delta {after - before}  keys {client.dbsize()}")
            print(f"  of which key tables (dictEntry + key robj + buckets, per MEMORY STATS): main {db.get('overhead.hashtable.main', 0)}, "
                  f"expires {db.get('overhead.hashtable.expires', 0)} bytes "
                  f"({(db.get('overhead.hashtable.main', 0) + db.get('overhead.hashtable.expires', 0)) / args.users:.1f}"
                  " per user)")
            for label, user_id in samples:
                h, p = keys.history(user_id), keys.prediction(user_id)
                print(f"  MEMORY USAGE ({label}) {h!r}: {client.memory_usage(h, samples=0)} bytes "
                      f"({client.strlen(h)}-byte value); {p!r}: {client.memory_usage(p, samples=0)} bytes "
                      f"({client.strlen(p)}-byte value, TTL {client.ttl(p)} s)")
            print(f"Redis bytes per user: {per_user:.1f}   target < {TARGET_BYTES}   "
                  f"{'PASS' if per_user < TARGET_BYTES else 'GAP'}")
            store.close()
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; the private redis-server has been stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
