"""How long `nextwatch train` takes on synthetic watch histories of growing size.

    .venv/bin/python bench/train.py [--events 1000000 10000000] [--spark-master local[2]]

For each size it generates the demo catalog's viewers (the demo generator, seeded) as a Parquet
file, then runs the real `nextwatch train --events FILE --no-event-log` against a private
redis-server, and prints wall time, events per second and the peak resident memory of the
Python driver and of Spark's JVM (in local mode the JVM runs the driver and the executors).
Then it prints how the time grew against the events (target: 10x the events in at most 12x the
time) and whether the largest size trained in under 15 minutes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Processes  # noqa: E402  (bench/ is run as a folder of scripts)

from nextwatch.datasets.demo import DemoConfig, write_demo_dataset


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
            "output": next((line for line in output.splitlines() if line.startswith("published")), "")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--mean-watches", type=int, default=40)
    args = parser.parse_args(argv)
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
    if len(results) >= 2:
        small, large = results[0], results[-1]
        growth = large["events"] / small["events"]
        slowdown = large["seconds"] / small["seconds"]
        verdict = "PASS" if slowdown <= 1.2 * growth else "GAP"
        print(f"{growth:.1f}x the events took {slowdown:.1f}x the time   target <= {1.2 * growth:.1f}x   {verdict}")
    largest = results[-1]
    verdict = "PASS" if largest["seconds"] < 15 * 60 else "GAP"
    print(f"{largest['events']:,} events in {largest['seconds'] / 60:.1f} min   target < 15 min   {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
