"""How long the local Redis Cluster (nextwatch.local_processes.redis_cluster) takes to start, to fail
over a SIGKILLed master, to heal, and how long the service's cluster client
(store.connection.connect_cluster) cannot write a key of the dead master's slots. One fresh cluster per round, in a temporary folder, on loopback.

    .venv/bin/python bench/cluster_timing.py [--rounds 3] [--node-timeout-ms 1500]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import tempfile
import time

import redis
import redis.cluster

from nextwatch.local_processes.redis_cluster import LocalRedisCluster
from nextwatch.store.connection import connect_cluster


def client_for(cluster: LocalRedisCluster) -> redis.cluster.RedisCluster:
    """The service's own cluster client (its retries), with a short socket timeout."""
    return connect_cluster(cluster.url, socket_timeout=1.0, socket_connect_timeout=1.0)


def first_write_after(client: redis.cluster.RedisCluster, key: str, since: float, limit: float = 30.0) -> float:
    """Seconds from ``since`` until a SET of ``key`` succeeds (the client's own retries included)."""
    while time.monotonic() - since < limit:
        try:
            client.set(key, "after")
            return time.monotonic() - since
        except (redis.exceptions.RedisError, OSError):
            time.sleep(0.02)
    raise TimeoutError(f"no successful write of {key} within {limit} s")


def one_round(node_timeout_ms: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="cluster-timing-") as folder:
        cluster = LocalRedisCluster(folder, node_timeout_ms=node_timeout_ms)
        started = time.monotonic()
        cluster.start()
        figures = {"start": time.monotonic() - started}
        try:
            client = client_for(cluster)
            client.set("user:42", "before")
            slot = cluster.keyslot("user:42")
            owner = cluster.master_for_slot(slot)
            with concurrent.futures.ThreadPoolExecutor(1) as writer:
                killed = time.monotonic()
                cluster.kill(owner)
                gap = writer.submit(first_write_after, client, "user:42", killed)
                cluster.wait_for_failover(slot)
                figures["failover"] = time.monotonic() - killed
                figures["client_write_gap"] = gap.result()
            healing = time.monotonic()
            cluster.wait_until_healthy()
            figures["heal"] = time.monotonic() - healing
            client.close()
        finally:
            stopping = time.monotonic()
            cluster.stop()
            figures["stop"] = time.monotonic() - stopping
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--node-timeout-ms", type=int, default=1500)
    args = parser.parse_args()
    rounds = []
    for number in range(1, args.rounds + 1):
        rounds.append(one_round(args.node_timeout_ms))
        print(f"round {number}: " + ", ".join(f"{name} {value:.2f} s" for name, value in rounds[-1].items()),
              flush=True)
    print(f"cluster-node-timeout {args.node_timeout_ms} ms, {args.rounds} rounds, median (min-max):")
    for name in rounds[0]:
        values = [figures[name] for figures in rounds]
        print(f"  {name:17s} {statistics.median(values):6.2f} s  ({min(values):.2f}-{max(values):.2f})")


if __name__ == "__main__":
    main()
