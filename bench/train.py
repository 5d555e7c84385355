"""How long `nextwatch train` takes on synthetic watch histories of growing size.

    .venv/bin/python bench/train.py [--events 1000000 10000000] [--spark-master local[2]]

For each size it generates the demo catalog's viewers (the demo generator, seeded) as a Parquet
file, then runs the real `nextwatch train --events FILE --no-event-log` against a private
redis-server, and prints wall time, events per second and the peak resident memory of the
Python driver and of Spark's JVM (in local mode the JVM runs the driver and the executors).
Then it prints how the time grew against the events (target: 10x the events in at most 12x the
time) and whether the largest size trained in under 15 minutes.

    .venv/bin/python bench/train.py --network-only [--viewers 3000] [--titles 2000] [--epochs 1] [--rounds 3]

The sequence network alone (its training passes, without Spark's table, the holdout or start-up),
on the demo viewers' histories, in interleaved rounds, each round in the other order than the
last: positions trained per second, and per core, in this process with one thread and with
every core, and under TorchDistributor (``local[2]``, torchrun on this machine, gloo) with one
process and with two of one thread each; the speed-up from 1 to 2 processes and the parallel
efficiency (speed-up / 2), round by round and their median. The wall time of a TorchDistributor
run, its processes' start-up included, is printed beside it. Runs after the sizes above unless
``--network-only``; ``--no-network`` leaves it out.
"""

from __future__ import annotations

import argparse
import re
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Processes  # noqa: E402  (bench/ is run as a folder of scripts)

from nextwatch.datasets.demo_dataset import DemoConfig, write_demo_dataset


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of one process, in MiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def time_training(events_file: Path, redis_url: str, master: str) -> dict:
    env = {**os.environ, "NEXTWATCH_REDIS_URL": redis_url, "SPARK_LOCAL_IP": "127.0.0.1"}
    command = [sys.executable, "-m", "nextwatch.cli", "train", "--events", str(events_file), "--no-event-log",
               "--spark-master", master]
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=Path(__file__).resolve().parent.parent)
    driver_peak = jvm_peak = 0.0
    jvm_pids: set[int] = set()
    while process.poll() is None:
        jvm_pids.update(children_of(process.pid))
        driver_peak = max(driver_peak, peak_rss_mb(process.pid))
        jvm_peak = max([jvm_peak] + [peak_rss_mb(pid) for pid in jvm_pids])
        time.sleep(0.5)
    output = process.stdout.read()
    if process.returncode != 0:
        raise RuntimeError(f"training failed:\n{output}")
    return {"seconds": time.monotonic() - started, "driver_mb": driver_peak, "jvm_mb": jvm_peak,
            "output": next((line for line in output.splitlines() if line.startswith("published")), ""),
            "network": [line.split(" - ")[-1] for line in output.splitlines() if NETWORK_LOG.search(line)]}


# What the run's log says of the network: each epoch (with its holdout figure), the stop, the cap.
NETWORK_LOG = re.compile(r"sequence model epoch|sequence model: |time cap reached|sequence weight")


NETWORK_VARIANTS = {  # name -> (engine, processes, threads per process)
    "this process, 1 thread": ("local", 1, 1),
    "this process, every core": ("local", 1, 0),
    "TorchDistributor, 1 process": ("distributor", 1, 1),
    "TorchDistributor, 2 processes": ("distributor", 2, 1),
}


def network_histories(viewers: int, titles: int, mean_watches: int):
    """The demo viewers' histories (title codes in time order), as the network trains on them."""
    import numpy as np

    from nextwatch.datasets.demo_catalog import generate_catalog
    from nextwatch.datasets.demo_viewers import simulate_viewers

    config = DemoConfig(titles=titles, viewers=viewers, mean_watches=mean_watches)
    users, codes, _ = simulate_viewers(config, generate_catalog(config))
    order = np.argsort(users, kind="stable")
    users, codes = users[order], codes[order].astype(np.int64)
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    return [codes[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def time_network(histories, titles: int, epochs: int, variant: str) -> dict:
    from nextwatch.training.engines import Engine
    from nextwatch.training.sequence_training import SequenceOptions, train_sequence_model

    engine, processes, threads = NETWORK_VARIANTS[variant]
    options = SequenceOptions(threads=threads, engine=Engine(engine, processes=processes, device="cpu"))
    started = time.monotonic()
    _, report = train_sequence_model(histories, titles, options, epochs=epochs)
    cores = processes * (threads or os.cpu_count() or 1)
    rate = report.positions / report.train_seconds
    return {"rate": rate, "per_core": rate / cores, "cores": cores, "wall": time.monotonic() - started,
            "engine": report.engine}


def network_rows(viewers: int, titles: int, mean_watches: int, epochs: int, rounds: int) -> None:
    import logging

    import numpy as np

    from nextwatch.training.spark import spark_session

    logging.getLogger("nextwatch").setLevel(logging.WARNING)
    histories = network_histories(viewers, titles, mean_watches)
    positions = sum(min(len(h), 51) - 1 for h in histories if len(h) >= 2)
    print(f"sequence network alone: {len(histories):,} viewers, {titles:,} titles, {positions:,} positions an epoch, "
          f"{epochs} epoch(s) a run, {rounds} interleaved rounds; load before: {os.getloadavg()[0]:.2f}", flush=True)
    spark = spark_session("local[2]", app_name="nextwatch-bench-network")
    results = {name: [] for name in NETWORK_VARIANTS}
    try:
        names = list(NETWORK_VARIANTS)
        for round_index in range(rounds):
            for name in names if round_index % 2 == 0 else names[::-1]:
                results[name].append(time_network(histories, titles, epochs, name))
                got = results[name][-1]
                print(f"  round {round_index + 1}  {name:<31} {got['rate']:>9,.0f} positions/s "
                      f"({got['per_core']:>7,.0f} per core of {got['cores']}), wall {got['wall']:5.1f} s", flush=True)
    finally:
        spark.stop()
    for name, runs in results.items():
        rate, per_core = np.median([r["rate"] for r in runs]), np.median([r["per_core"] for r in runs])
        print(f"{name:<31} median {rate:>9,.0f} positions/s, {per_core:>7,.0f} per core, "
              f"wall {np.median([r['wall'] for r in runs]):5.1f} s   [{runs[0]['engine']}]")
    one, two = results["TorchDistributor, 1 process"], results["TorchDistributor, 2 processes"]
    speedups = [b["rate"] / a["rate"] for a, b in zip(one, two)]
    print(f"speed-up 1 -> 2 processes: {float(np.median(speedups)):.2f}x (rounds: "
          f"{', '.join(f'{x:.2f}' for x in speedups)}), parallel efficiency {float(np.median(speedups)) / 2:.0%}; "
          f"load after: {os.getloadavg()[0]:.2f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--mean-watches", type=int, default=40)
    network = parser.add_mutually_exclusive_group()
    network.add_argument("--network-only", action="store_true", help="only the sequence network's throughput")
    network.add_argument("--no-network", action="store_true", help="leave the sequence network's throughput out")
    parser.add_argument("--viewers", type=int, default=3000, help="the network's data: demo viewers")
    parser.add_argument("--titles", type=int, default=2000, help="the network's data: demo titles")
    parser.add_argument("--epochs", type=int, default=1, help="the network's epochs per run")
    parser.add_argument("--rounds", type=int, default=3, help="the network's interleaved rounds")
    args = parser.parse_args(argv)
    if not args.network_only:
        table_rows(args)
    if not args.no_network:
        network_rows(args.viewers, args.titles, args.mean_watches, args.epochs, args.rounds)
    return 0


def table_rows(args) -> None:
    results = []
    with Processes() as processes, tempfile.TemporaryDirectory(prefix="nextwatch-bench-train-") as folder:
        for size in args.events:
            viewers = max(1, size // args.mean_watches)
            generated = time.monotonic()
            dataset = write_demo_dataset(Path(folder) / f"events-{size}",
                                         DemoConfig(titles=5_000, viewers=viewers, mean_watches=args.mean_watches))
            generated = time.monotonic() - generated
            result = time_training(dataset.events_path, processes.redis.url, args.spark_master)
            result["events"] = dataset.events
            results.append(result)
            print(f"{dataset.events:>10,} events ({viewers:,} viewers, 5,000 titles; generated in {generated:.0f} s): "
                  f"train {result['seconds']:7.1f} s, {dataset.events / result['seconds']:9,.0f} events/s, "
                  f"peak RSS driver {result['driver_mb']:.0f} MiB, Spark JVM {result['jvm_mb']:.0f} MiB", flush=True)
            print(f"    {result['output']}", flush=True)
            for line in result["network"]:
                print(f"    network: {line}", flush=True)
    if len(results) >= 2:
        small, large = results[0], results[-1]
        growth = large["events"] / small["events"]
        slowdown = large["seconds"] / small["seconds"]
        verdict = "PASS" if slowdown <= 1.2 * growth else "GAP"
        print(f"{growth:.1f}x the events took {slowdown:.1f}x the time   target <= {1.2 * growth:.1f}x   {verdict}")
    largest = results[-1]
    verdict = "PASS" if largest["seconds"] < 15 * 60 else "GAP"
    print(f"{largest['events']:,} events in {largest['seconds'] / 60:.1f} min   target < 15 min   {verdict}")


if __name__ == "__main__":
    sys.exit(main())
