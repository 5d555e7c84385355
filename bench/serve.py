"""How close the API comes to the floor that its server and Redis set, measured side by side.

    .venv/bin/python bench/serve.py [--duration 10] [--connections 16] [--workers N] [--rounds 2]
                                    [--no-sequence] [--gunicorn] [--mixed] [--variant SRC]

Starts a private redis-server, publishes a synthetic model (5,000 titles x 50 neighbours, and
by default a sequence network of the shipped shape, 64-dim, 2 blocks, 50 positions, blended
with λ 16, so that a watch computes the blend inline), seeds two pools of users with 50-title
histories and cached top-10 predictions, then serves the apps with the production server
(granian, ``nextwatch.server.granian_server``) and the same worker count (the settings
default, 4):

  (a) bench/bare_app.py: a WSGI app with no Flask, one Redis GET, a small JSON body, on the
      production server: the floor. granian is the fastest Python server measured here;
  (g) with --gunicorn: the same bare app on gunicorn gthread (the server before granian);
  (b) GET /recommend/<user>: cache hits, a random user of the read pool per request;
  (c) POST /watched: a random user of the write pool, a random title per request;
  (w) the same requests to the bare app's POST /watched (bare_app.py): a watch's own work (the
      store's two scripts and the model's top 10) written plainly with redis-py's client, with
      no Flask, rules, metrics or checks, on the production server. It tells how much of (c)'s
      distance from its target is the work itself: (w)/(a) is where a plain implementation of
      that work stands against (a); (c)/(w) above 1 means the service costs less than it;
  (f) GET /recommend/<user>?k=3&max_maturity=18: cache hits with a filter that the cached
      top-10 satisfies (most titles pass), served from the cached list (issue target: at most
      1.2x the cost of (b), read as (b)/(f) throughput <= 1.2);
  (l) GET /recommend cache hits from ONE connection (wrk -t1 -c1): the latency a single client
      sees, mean and p99;
  (x) with --mixed: (b) and (c) at once on the API, half the connections each: what reads see
      while watches are computed beside them (their p99), and the watches' rate;
  (m) the bare app (a) from ONE connection: the floor of (l) on this machine, so that the
      absolute target of (l) can be read against what one GET through the same server costs.

wrk (2 threads) measures each in turn after a warm-up; the three run interleaved for
``--rounds`` rounds (every other round in reverse order) so that each round's ratios compare
runs that shared the machine's load. The summary is the MEDIAN of the per-round ratios (with 2
rounds: their mean). The machine is shared, so the ratios are the result; the absolute figures
only describe this run. On a busy machine two 10 s runs of the same code can differ by 30% or
more (try ``--variant src``, an A/A run): use more, shorter rounds (``--rounds 6 --duration 5``)
to compare changes.

``--variant DIR`` serves a second copy of the API from another source tree (a changed copy of
src/) next to the first, measured in the same rounds as (b*) and (c*) (and (x*) with --mixed).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import resource
import statistics
import sys

import nextwatch
from nextwatch.settings import Settings
from nextwatch.store import Store

# Run as a script, so bench/ is on sys.path and its modules import by their plain names.
from bare_app import SMALL_KEY, SMALL_VALUE
from common import (
    Interrupted, Processes, bare_server_command, check_bulk_writer, counters, free_port, group_cpu_seconds,
    machine_note, process_cpu_seconds, publish_synthetic_model, real_server_command, run_wrk,
    synthetic_histories, write_users,
)

TARGETS = (  # (label, numerator, denominator, what, comparison, target)
    ("(b)/(a) throughput", "b", "a", "rps", ">=", 0.7),
    ("(b) p99 / (a) p99", "b", "a", "p99", "<=", 2.0),
    ("(c)/(a) throughput", "c", "a", "rps", ">=", 0.35),
    ("(b)/(f) throughput", "b", "f", "rps", "<=", 1.2),
)
FILTERED_QUERY = "?k=3&max_maturity=18"  # (f)
SINGLE_CLIENT_MEAN_MS = 0.3  # target for (l): mean latency of a cache hit, one connection
NAMES = {
    "a": "(a) bare WSGI, 1 GET",
    "g": "(g) bare, on gunicorn",
    "l": "(l) GET hit, 1 client",
    "m": "(m) bare, 1 client",
    "b": "(b) GET /recommend hit",
    "f": "(f) GET hit, filtered",
    "c": "(c) POST /watched",
    "w": "(w) bare watch, plain",
    "b*": "(b*) same, --variant",
    "c*": "(c*) same, --variant",
    "x": "(x) mixed: GET hits",
    "x*": "(x*) same, --variant",
}


def seed(settings: Settings, args) -> None:
    store = Store.from_settings(settings)
    try:
        model = publish_synthetic_model(store, args.titles, args.neighbours, seed=args.seed,
                                        sequence=args.sequence)
        version = store.models.current_version()
        for number, prefix in enumerate(("r", "w")):
            histories = synthetic_histories(model, args.users, settings.history_length, seed=args.seed + 1 + number)
            predictions = [model.recommend(h, settings.cache_top_k) for h in histories]
            if number == 0:
                problems = check_bulk_writer(store, settings, histories[0], predictions[0], version)
                if problems:
                    raise SystemExit("the bulk writer differs from the store's own code: " + "; ".join(problems))
            write_users(store.client, store.keys, settings, [f"{prefix}{i}" for i in range(args.users)],
                        histories, predictions, version)
        for log in store.keys.event_logs():  # the check's events; the benchmark starts empty
            store.client.delete(log)  # one key a command: on a cluster each is in its own slot
        store.client.set(SMALL_KEY, SMALL_VALUE)
        network = "with a sequence network (64-dim, 2 blocks, λ 16)" if model.has_sequence else "table only"
        print(f"data: model version {version}, {args.titles} titles x {args.neighbours} neighbours, {network}; "
              f"{args.users} read users (r*) + {args.users} write users (w*), "
              f"{settings.history_length}-title histories, cached top-{settings.cache_top_k}; "
              "bulk writer checked against record_watch + save_prediction: identical", flush=True)
    finally:
        store.close()


def measure(key: str, processes: Processes, urls: dict, args, duration: float, round_number: int):
    """One wrk run; the result and a note: CPU microseconds per request spent by the server's
    processes, by redis-server and by wrk, and for the API what its counters saw."""
    servers = {"a": "bare", "m": "bare", "w": "bare", "g": "gunicorn", "b": "api", "c": "api", "l": "api", "f": "api",
               "x": "api"}
    server = servers.get(key, "variant")
    cpu_before = (group_cpu_seconds(processes.groups[server]), process_cpu_seconds(processes.redis.process.pid),
                  resource.getrusage(resource.RUSAGE_CHILDREN))
    result, note = _measure(key, urls, args, duration, round_number)
    server_cpu = group_cpu_seconds(processes.groups[server]) - cpu_before[0]
    redis_cpu = process_cpu_seconds(processes.redis.process.pid) - cpu_before[1]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (children.ru_utime + children.ru_stime) - (cpu_before[2].ru_utime + cpu_before[2].ru_stime)
    per = 1e6 / max(1, result.requests)
    result.cpu_us = {"server": server_cpu * per, "redis": redis_cpu * per, "wrk": wrk_cpu * per}
    cpu = f"CPU/req: server {server_cpu * per:4.0f} us, redis {redis_cpu * per:3.0f} us, wrk {wrk_cpu * per:3.0f} us"
    return result, f"{cpu}; {note}" if note else cpu


def _measure(key: str, urls: dict, args, duration: float, round_number: int):
    if key == "a":
        return run_wrk(urls["bare"] + "/", None, duration, args.connections), ""
    if key == "g":
        return run_wrk(urls["gunicorn"] + "/", None, duration, args.connections), ""
    if key == "l":
        result = run_wrk(urls["api"] + "/", "recommend.lua", duration, 1, threads=1,
                         script_args=(args.users, "r", round_number))
        return result, f"mean {result.mean_ms:.3f} ms"
    if key == "m":
        result = run_wrk(urls["bare"] + "/", None, duration, 1, threads=1)
        return result, f"mean {result.mean_ms:.3f} ms"
    if key == "w":
        return run_wrk(urls["bare"] + "/", "watched.lua", duration, args.connections,
                       script_args=(args.users, "w", args.titles, round_number, 0)), ""
    url = urls["variant" if key.endswith("*") else "api"]
    if key.startswith("x"):
        return _mixed(url, args, duration, round_number)
    before = counters(url)
    if key.startswith("b") or key == "f":
        query = (FILTERED_QUERY,) if key == "f" else ()
        result = run_wrk(url + "/", "recommend.lua", duration, args.connections,
                         script_args=(args.users, "r", round_number, *query))
    else:
        result = run_wrk(url + "/", "watched.lua", duration, args.connections,
                         script_args=(args.users, "w", args.titles, round_number, int(args.event_ids)))
    after = counters(url)
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    if key.startswith("b") or key == "f":
        hits, misses = delta.get("cache_hits_total", 0), delta.get("cache_misses_total", 0)
        note = f"cache hits {100 * hits / max(1, hits + misses):.1f}%"
    else:
        note = f"watch events recorded {delta.get('watch_events_total', 0):.0f}"
    return result, note


def _mixed(url: str, args, duration: float, round_number: int):
    """(x): cache hits and watches sent at once, half the connections each; the reads' result,
    with the watches' beside it (``result.beside``)."""
    half = max(1, args.connections // 2)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        reads = pool.submit(run_wrk, url + "/", "recommend.lua", duration, half, 1, (args.users, "r", round_number))
        writes = pool.submit(run_wrk, url + "/", "watched.lua", duration, half, 1,
                             (args.users, "w", args.titles, round_number, 0))
        reads, writes = reads.result(), writes.result()
    reads.beside = writes
    return reads, (f"watches beside them: {writes.requests_per_second:.0f} req/s, p99 {writes.p99_ms:.2f} ms "
                   "(CPU per request counts the reads only)")


def targets(variant: bool):
    """The targets, and with a variant the same ratios for it (b* and c* over a)."""
    rows = list(TARGETS)
    if variant:
        rows += [(label.replace(f"({n})", f"({n}*)", 1), n + "*", d, what, comparison, target)
                 for label, n, d, what, comparison, target in TARGETS if d == "a"]
    return rows


def ratio(results: dict, numerator: str, denominator: str, what: str) -> float:
    a, b = results[numerator], results[denominator]
    if what == "rps":
        return a.requests_per_second / b.requests_per_second
    return a.p99_ms / b.p99_ms


def cpu_ratio(results: dict, numerator: str, denominator: str) -> float:
    """The throughput ratio that CPU alone predicts: with wrk, the servers and Redis sharing
    the same cores, requests/s is about cores / (CPU per request of all of them)."""
    total = {key: sum(results[key].cpu_us.values()) for key in (numerator, denominator)}
    return total[denominator] / total[numerator]


def verdict(value: float, comparison: str, target: float) -> str:
    ok = value >= target if comparison == ">=" else value <= target
    return "PASS" if ok else "GAP"



def _server_shape() -> str:
    """Interface, threads and keep-alive of the production configuration, as it is now."""
    from nextwatch.server import granian_server
    from nextwatch.settings import Settings

    server = granian_server(Settings())
    return (f"granian {server.interface} interface, {server.blocking_threads} threads per worker, "
            f"keep-alive {'on' if server.http1_settings.keep_alive else 'off'}")


SERVER_SHAPE = _server_shape()

def main(argv: list[str] | None = None) -> int:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--workers", type=int, default=defaults.workers,
                        help=f"worker processes of every server (default: the settings default, {defaults.workers})")
    parser.add_argument("--rounds", type=int, default=2, choices=range(1, 101), metavar="N",
                        help="interleaved rounds of (a), (b), (c) (default 2)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per scenario (default 3)")
    parser.add_argument("--users", type=int, default=10_000, help="users per pool (default 10000)")
    parser.add_argument("--titles", type=int, default=5_000)
    parser.add_argument("--neighbours", type=int, default=50)
    parser.add_argument("--event-ids", action="store_true", help="(c) sends a unique event_id with each watch")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-sequence", dest="sequence", action="store_false",
                        help="publish the table alone (no sequence network in the model)")
    parser.add_argument("--gunicorn", action="store_true",
                        help="also serve the bare app on gunicorn gthread as (g) (needs `pip install gunicorn`)")
    parser.add_argument("--mixed", action="store_true",
                        help="also measure (x): cache hits and watches at once, half the connections each")
    parser.add_argument("--variant", metavar="SRC",
                        help="also serve the API from this source tree (a changed copy of src/, put first on "
                             "PYTHONPATH) and measure it interleaved with the others as (b*) and (c*)")
    args = parser.parse_args(argv)
    keys = ["a", "b", "b*", "c", "c*"] if args.variant else ["a", "b", "c"]
    keys += ["w", "f"]
    if args.mixed:
        keys += ["x", "x*"] if args.variant else ["x"]
    keys += ["l", "m"] + (["g"] if args.gunicorn else [])

    print(f"nextwatch serving benchmark: code from {nextwatch.__file__.rsplit('/', 1)[0]}; {machine_note()}")
    print(f"servers: production config (nextwatch.server.granian_server), {SERVER_SHAPE}, workers x{args.workers}; "
          f"wrk -t2 -c{args.connections} -d{args.duration:.0f}s --latency; warm-up {args.warmup:.0f} s each",
          flush=True)
    try:
        with Processes() as processes:
            settings = defaults.with_overrides(redis_url=processes.redis.url)
            seed(settings, args)
            bare_port, api_port = free_port(), free_port()
            urls = {
                "bare": processes.serve("bare", bare_server_command(bare_port, args.workers), bare_port, "/"),
                "api": processes.serve("api", real_server_command(api_port, args.workers), api_port, "/readyz"),
            }
            if args.gunicorn:
                port = free_port()
                urls["gunicorn"] = processes.serve("gunicorn", bare_server_command(port, args.workers, "gunicorn"),
                                                   port, "/")
            if args.variant:
                port = free_port()
                urls["variant"] = processes.serve("variant", real_server_command(port, args.workers), port, "/readyz",
                                                  env={"PYTHONPATH": args.variant})
                print(f"variant: the API served from {args.variant}", flush=True)
            for key in keys:
                measure(key, processes, urls, args, args.warmup, round_number=0)
            rounds = []
            for number in range(1, args.rounds + 1):
                print(f"round {number}", flush=True)
                results = {}
                # Every other round runs backwards (a b c, c b a, ...), so that a drift in the
                # machine's load does not always favour the same scenario.
                for key in keys if number % 2 else keys[::-1]:
                    results[key], note = measure(key, processes, urls, args, args.duration, round_number=number)
                    print(f"  {NAMES[key]:<24}{results[key].line()}  {note}".rstrip(), flush=True)
                rounds.append(results)
                print("  ratios: " + ", ".join(
                    f"{label} {ratio(results, n, d, w):.2f}" for label, n, d, w, _c, _t in targets(args.variant)),
                    flush=True)
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; every process this benchmark started has been stopped", file=sys.stderr)
        return 130

    mean_note = ", here their mean" if len(rounds) == 2 else ""
    print(f"\nsummary over {len(rounds)} rounds (figures: median per scenario; "
          f"ratios: median of the per-round ratios{mean_note})")
    for key in keys:
        runs = [r[key] for r in rounds]
        print(f"  {NAMES[key]:<24}{statistics.median(r.requests_per_second for r in runs):9.0f} req/s  "
              f"p50 {statistics.median(r.p50_ms for r in runs):7.2f} ms  "
              f"p99 {statistics.median(r.p99_ms for r in runs):7.2f} ms  CPU/req: server "
              f"{statistics.median(r.cpu_us['server'] for r in runs):4.0f} us, redis "
              f"{statistics.median(r.cpu_us['redis'] for r in runs):3.0f} us, wrk "
              f"{statistics.median(r.cpu_us['wrk'] for r in runs):3.0f} us")
    for label, n, d, what, comparison, target in targets(args.variant):
        value = statistics.median(ratio(r, n, d, what) for r in rounds)
        print(f"  {label:<20} {value:5.2f}   target {comparison} {target}   {verdict(value, comparison, target)}")
    single = [r["l"] for r in rounds]
    mean = statistics.median(r.mean_ms for r in single)
    print(f"  {'(l) mean, 1 client':<20} {mean:5.3f} ms   target <= {SINGLE_CLIENT_MEAN_MS} ms   "
          f"{verdict(mean, '<=', SINGLE_CLIENT_MEAN_MS)}   (p99 {statistics.median(r.p99_ms for r in single):.3f} ms, "
          f"{statistics.median(r.requests_per_second for r in single):.0f} req/s)")
    floor = [r["m"] for r in rounds]
    print(f"  {'(m) mean, 1 client':<20} {statistics.median(r.mean_ms for r in floor):5.3f} ms   the bare app from one "
          f"connection, the floor of (l) here (p99 {statistics.median(r.p99_ms for r in floor):.3f} ms); (l)/(m) "
          f"mean {statistics.median(r['l'].mean_ms / r['m'].mean_ms for r in rounds):.2f}")
    for label, n, d, meaning in (("(w)/(a) throughput", "w", "a", "a watch's own work, written plainly, against (a)"),
                                 ("(c)/(w) throughput", "c", "w", "the API's watch against that plain one")):
        value = statistics.median(ratio(r, n, d, "rps") for r in rounds)
        print(f"  {label:<20} {value:5.2f}   {meaning}")
    for key in [key for key in keys if key.startswith("x")]:
        runs = [r[key] for r in rounds]
        print(f"  {NAMES[key] + ' p99':<20} {statistics.median(r.p99_ms for r in runs):5.2f} ms   reads with watches "
              f"beside them ((b) alone: p99 {statistics.median(r['b'].p99_ms for r in rounds):.2f} ms); watches "
              f"{statistics.median(r.beside.requests_per_second for r in runs):.0f} req/s, p99 "
              f"{statistics.median(r.beside.p99_ms for r in runs):.2f} ms")
    if args.gunicorn:
        value = statistics.median(ratio(r, "a", "g", "rps") for r in rounds)
        print(f"  {'(a)/(g) throughput':<20} {value:5.2f}   the bare app on granian against gunicorn gthread")
    print("  cross-check, less sensitive to the other tenants' bursts: the throughput ratio predicted by CPU "
          "per request (server + redis + wrk):")
    for label, n, d, what, _comparison, _target in targets(args.variant):
        if what == "rps":
            value = statistics.median(cpu_ratio(r, n, d) for r in rounds)
            print(f"  {label:<20} {value:5.2f}")
    for label, n, d in (("(w)/(a) throughput", "w", "a"), ("(c)/(w) throughput", "c", "w")):
        print(f"  {label:<20} {statistics.median(cpu_ratio(r, n, d) for r in rounds):5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
