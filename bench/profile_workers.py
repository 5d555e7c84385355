"""Where an API worker's time goes under load, for (b) GET /recommend hits and (c) POST /watched.

    .venv/bin/pip install py-spy      # once
    .venv/bin/python bench/profile_workers.py [--duration 15] [--connections 16] [--workers N] [--keep DIR]

Same data and servers as bench/serve.py (the production granian configuration). While wrk drives
one scenario, py-spy samples every worker process (``record --subprocesses --nonblocking``, raw
collapsed stacks). By default ``--gil``: only samples of a thread holding the GIL count. A
worker's Python threads release the GIL in every blocking call, so this is the worker's Python
CPU time (plus time it was descheduled while holding it), the resource this 2-core machine runs
out of; py-spy's plain "not idle" test was found to count socket waits as busy. ``--wall``
samples everything (``--idle``), so that blocking (waiting for Redis) shows as well; there a
thread with no Python frame is one of granian's threads waiting in Rust and is left out as idle.

Each busy sample is charged to the innermost frame that belongs to a known layer (redis-py,
metrics, scoring, the nextwatch store/service/api, Flask/Werkzeug, granian's WSGI bridge);
standard-library frames (socket, re, dataclasses ...) and C calls (numpy, orjson) count for the
layer that called them. Under ``--gil``, a sample with no Python frame is granian's Rust code
holding the GIL (turning a request into an environ, writing the answer): it is its own row. A
second table gives inclusive shares of a few functions. py-spy runs on the same 2 cores, so the
shares matter, not the absolute rates.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

from nextwatch.settings import Settings

# Run as a script, so bench/ is on sys.path and its modules import by their plain names.
from common import Interrupted, Processes, counters, free_port, real_server_command, run_wrk
from serve import seed

# (layer, pattern on a frame's file name), tried from the innermost frame outwards.
LAYERS = [
    ("redis-py (client code + waiting for Redis)", re.compile(r"(^|/)redis/")),
    ("metrics (prometheus_client)", re.compile(r"prometheus_client/|nextwatch/metrics\.py")),
    ("JSON encode/decode", re.compile(r"(^|/)json/")),
    ("scoring (nextwatch/model)", re.compile(r"nextwatch/model/")),
    ("nextwatch store (key names, state bytes)", re.compile(r"nextwatch/(store/|keys\.py)")),
    ("nextwatch service (ranking, rules, answers)", re.compile(r"nextwatch/(service/|ids\.py|errors\.py)")),
    ("nextwatch api (routes, inputs, errors, latency)", re.compile(r"nextwatch/api/")),
    ("Flask + Werkzeug (routing, request, response)", re.compile(r"(^|/)(flask|werkzeug)/")),
    ("granian WSGI bridge (environ, handing the answer over)", re.compile(r"(^|/)granian/")),
]
NO_PYTHON_FRAME = "granian in Rust, holding the GIL (no Python frame)"
INCLUSIVE = [  # (label, function name, file pattern)
    ("granian _runner (the whole request in Python)", "_runner", "granian/wsgi.py"),
    ("ServingRoutes.__call__ (the fast routes)", "__call__", "nextwatch/api/serving_routes.py"),
    ("  _refusal (request line and header sizes)", "_refusal", "nextwatch/api/serving_routes.py"),
    ("  inputs.json_object (reading the body)", "json_object", "nextwatch/api/inputs.py"),
    ("  LatencyObserver.observe (latency histogram)", "observe", "nextwatch/api/responses.py"),
    ("  json_bytes (orjson)", "json_bytes", "nextwatch/api/responses.py"),
    ("RecommendationService.recommend", "recommend", "nextwatch/service/recommendations.py"),
    ("RecommendationService.record_watch", "record_watch", "nextwatch/service/recommendations.py"),
    ("  Ranker.rank (scoring and rules)", "rank", "nextwatch/service/ranking.py"),
    ("  UserStore.read (GET + decode)", "read", "nextwatch/store/users.py"),
    ("  UserStore.record_watch (Lua EVALSHA)", "record_watch", "nextwatch/store/users.py"),
    ("  UserStore.save_prediction (Lua EVALSHA)", "save_prediction", "nextwatch/store/users.py"),
    ("DirectCommands.execute (a command on the thread's connection)", "execute",
     "nextwatch/store/direct_commands.py"),
    ("counters: Counter.inc", "inc", "prometheus_client/metrics.py"),
]
FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def parse_stacks(path: Path):
    """py-spy raw output -> [(process depth, frames outermost first as (function, file), count)].
    The depth is 1 for granian's main process and 2 for its workers."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames, depth = [], 0
        for part in stack.split(";"):
            if part.startswith("process "):
                depth += 1
                continue
            match = FRAME.match(part)
            if match:
                frames.append((match["function"].rpartition(".")[2], match["file"] or ""))
        stacks.append((depth, frames, int(count)))
    return stacks


def is_idle(frames, wall: bool) -> bool:
    """Under --wall, a thread with no Python frame (granian's Rust threads waiting for work) or
    a worker's main thread parked in Event.wait; under --gil every sample is work."""
    if not wall:
        return False
    return not frames or frames[-1][0] == "wait" and "threading.py" in frames[-1][1]


def layer_of(frames) -> str:
    if not frames:
        return NO_PYTHON_FRAME
    for _function, file in reversed(frames):
        for layer, pattern in LAYERS:
            if pattern.search(file):
                return layer
    return "other (interpreter, stdlib outside any layer)"


def summarise(path: Path, requests: int, seconds: float, rate: int, wall: bool) -> str:
    stacks = [(f, n) for depth, f, n in parse_stacks(path) if depth >= 2]
    idle = sum(n for f, n in stacks if is_idle(f, wall))
    busy_stacks = [(f, n) for f, n in stacks if not is_idle(f, wall)]
    busy = sum(n for _, n in busy_stacks)
    if not busy:
        return "  no busy samples: was the load running?"
    us_per_request = busy / rate / max(1, requests) * 1e6
    kind = "wall time" if wall else "GIL-holding (Python CPU) time"
    lines = [f"  worker samples: {busy} busy, {idle} idle (waiting for work); "
             f"{requests} requests in {seconds:.0f} s -> {us_per_request:.0f} us of worker {kind} per request",
             "  exclusive, by layer (innermost known frame):"]
    by_layer = collections.Counter()
    for frames, n in busy_stacks:
        by_layer[layer_of(frames)] += n
    for layer, n in by_layer.most_common():
        lines.append(f"    {100 * n / busy:5.1f}%  {n / busy * us_per_request:6.0f} us  {layer}")
    lines.append("  inclusive (share of busy samples with the function on the stack):")
    for label, function, file in INCLUSIVE:
        n = sum(count for frames, count in busy_stacks
                if any(f == function and file in path_ for f, path_ in frames))
        if n:
            lines.append(f"    {100 * n / busy:5.1f}%  {n / busy * us_per_request:6.0f} us  {label}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second per process")
    parser.add_argument("--wall", action="store_true",
                        help="wall time (py-spy --idle) instead of GIL-holding time (py-spy --gil)")
    parser.add_argument("--keep", type=Path, help="copy the raw py-spy stacks into this folder")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--titles", type=int, default=5_000)
    parser.add_argument("--neighbours", type=int, default=50)
    parser.add_argument("--event-ids", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-sequence", dest="sequence", action="store_false",
                        help="a table-only model (default: with the sequence network, as bench/serve.py)")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")

    scenarios = {
        "(b) GET /recommend (cache hits)": ("recommend.lua", lambda n: (args.users, "r", n)),
        "(c) POST /watched": ("watched.lua", lambda n: (args.users, "w", args.titles, n, int(args.event_ids))),
    }
    try:
        with Processes() as processes:
            settings = defaults.with_overrides(redis_url=processes.redis.url)
            seed(settings, args)
            port = free_port()
            api = processes.serve("api", real_server_command(port, args.workers), port, "/readyz")
            master = processes.groups["api"]
            for number, (name, (script, script_args)) in enumerate(scenarios.items(), 1):
                run_wrk(api + "/", script, 3, args.connections, script_args=script_args(100 + number))
                raw = processes.folder / f"profile-{number}.txt"
                spy = subprocess.Popen(
                    [py_spy, "record", "--pid", str(master), "--subprocesses", "--nonblocking",
                     "--idle" if args.wall else "--gil", "--format", "raw", "--rate", str(args.rate),
                     "--duration", str(int(args.duration)), "--output", str(raw)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
                try:
                    before = counters(api)
                    result = run_wrk(api + "/", script, args.duration, args.connections,
                                     script_args=script_args(number))
                    after = counters(api)
                    _, errors = spy.communicate(timeout=args.duration + 60)
                finally:
                    if spy.poll() is None:
                        spy.kill()
                        spy.wait()
                if not raw.exists():
                    raise SystemExit(f"py-spy wrote no profile: {errors}")
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(raw, args.keep / raw.name)
                hits = after.get("cache_hits_total", 0) - before.get("cache_hits_total", 0)
                print(f"{name}: {result.line()}  (under py-spy; cache hits during the run: {hits:.0f})")
                print(summarise(raw, result.requests, args.duration, args.rate, args.wall), flush=True)
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; every process this run started has been stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
