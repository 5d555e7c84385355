"""CPU per request of the apps themselves, called as WSGI in one process (no HTTP server, no wrk),
peeled layer by layer, so that the cost of Flask, the latency hooks, the service and the store
can be read off as differences.

    .venv/bin/python bench/app_cost.py [--requests 20000]

Against a private redis-server with the same data as bench/serve.py. CPU is this process's
user + system time (time.process_time), so the figures do not depend on how busy the shared
machine is as much as throughput does; each line is the best of ``--repeats`` passes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

import numpy as np
from werkzeug.test import EnvironBuilder

from nextwatch.server import prepare_multiprocess_metrics
from nextwatch.settings import Settings

# Run as a script, so bench/ is on sys.path and its modules import by their plain names.
from bare_app import SMALL_KEY, WatchFloor, make_app as make_bare_app
from common import Interrupted, Processes
from serve import seed


def environ(method: str, path: str, body: bytes | None = None) -> dict:
    builder = EnvironBuilder(path=path, method=method, data=body,
                             content_type="application/json" if body is not None else None)
    try:
        return builder.get_environ()
    finally:
        builder.close()


def run_wsgi(app, environs) -> None:
    def start_response(status, headers, exc_info=None):
        if not status.startswith("200"):
            raise RuntimeError(f"{status}")

    for env in environs:
        result = app(env, start_response)
        b"".join(result)
        if hasattr(result, "close"):
            result.close()


class Cases:
    """Labelled pieces of work, run round-robin ``repeats`` times; the best pass of each counts.
    Interleaving keeps a burst of load from the machine's other tenants on one case only."""

    def __init__(self, requests: int):
        self.requests = requests
        self.cases: list[tuple[str, object | None]] = []

    def heading(self, text: str) -> None:
        self.cases.append((text, None))

    def add(self, label: str, make_work) -> None:
        self.cases.append((label, make_work))

    def run(self, repeats: int) -> dict[str, tuple[float, float]]:
        best: dict[str, tuple[float, float]] = {}
        for _ in range(repeats):
            for label, make_work in self.cases:
                if make_work is None:
                    continue
                work = make_work()  # inputs are built outside the timed region ...
                gc.collect()
                gc.freeze()  # ... and kept out of the collector's way, as a server has no such pile
                cpu, wall = time.process_time(), time.perf_counter()
                work()
                gc.unfreeze()
                cpu = (time.process_time() - cpu) / self.requests * 1e6
                wall = (time.perf_counter() - wall) / self.requests * 1e6
                old = best.get(label, (float("inf"), float("inf")))
                best[label] = (min(old[0], cpu), min(old[1], wall))
        for label, make_work in self.cases:
            if make_work is None:
                print(label)
            else:
                print(f"  {label:<60} CPU {best[label][0]:6.1f} us   wall {best[label][1]:6.1f} us")
        return best


def without_hooks(app, make_work):
    """``make_work`` run with the app's before/after_request hooks (the latency histogram) off."""
    def make():
        work = make_work()

        def run():
            hooks = dict(app.before_request_funcs), dict(app.after_request_funcs)
            app.before_request_funcs.clear()
            app.after_request_funcs.clear()
            try:
                work()
            finally:
                app.before_request_funcs.update(hooks[0])
                app.after_request_funcs.update(hooks[1])
        return run
    return make


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2_000, help="requests per pass (default 2000)")
    parser.add_argument("--repeats", type=int, default=11, help="interleaved passes; the best counts")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--titles", type=int, default=5_000)
    parser.add_argument("--neighbours", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-sequence", dest="sequence", action="store_false",
                        help="publish the table alone (no sequence network in the model)")
    args = parser.parse_args(argv)
    n, rng = args.requests, np.random.default_rng(args.seed)

    try:
        with Processes() as processes:
            settings = Settings(redis_url=processes.redis.url)
            seed(settings, args)
            # As under `nextwatch serve`: metrics in multiprocess mode (mmap files), set up
            # before nextwatch.metrics is first imported.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(processes.folder / "metrics")
            prepare_multiprocess_metrics()
            from nextwatch.api import create_app

            app = create_app(settings)
            services = app.extensions["nextwatch"]
            service = services.recommendations
            users = services.store.users
            bare = make_bare_app(settings)
            # warm: model and title codes loaded, connections open
            run_wsgi(app, [environ("GET", "/recommend/r0")])
            run_wsgi(app, [environ("POST", "/watched", b'{"user_id": "w0", "content_id": "T00001"}')])

            def readers():
                return [f"r{u}" for u in rng.integers(0, args.users, n)]

            def watches():
                return [(f"w{u}", f"T{t:05d}") for u, t in zip(rng.integers(0, args.users, n),
                                                                rng.integers(0, args.titles, n))]

            def wsgi(target, make_environs):
                def make():
                    environs = make_environs()
                    return lambda: run_wsgi(target, environs)
                return make

            def each(call, make_inputs):
                def make():
                    inputs = make_inputs()
                    return lambda: [call(*item) if isinstance(item, tuple) else call(item) for item in inputs]
                return make

            gets = wsgi(app, lambda: [environ("GET", f"/recommend/{u}") for u in readers()])
            posts = wsgi(app, lambda: [environ("POST", "/watched", json.dumps({"user_id": u, "content_id": c}).encode())
                                       for u, c in watches()])
            model = service.serving.model
            histories = [users.read(f"w{u}").history for u in rng.integers(0, args.users, n)]

            cases = Cases(n)
            cases.heading("(a) bare WSGI app")
            cases.add("bare app: one GET + json.dumps", wsgi(bare, lambda: [environ("GET", "/")] * n))
            cases.add("redis-py client.get() of the small key only", each(users.client.get, lambda: [SMALL_KEY] * n))
            cases.heading("(b) GET /recommend/<user>, cache hit")
            cases.add("the app, full (what the server calls)", gets)
            cases.add("  same, without the latency hooks (before/after_request)", without_hooks(app, gets))
            cases.add("service.recommend() + json.dumps, no Flask",
                      each(lambda u: json.dumps(service.recommend(u)), readers))
            cases.add("store.users.read() only (GET + decode)", each(users.read, readers))
            cases.add("redis-py client.get() of the same key only", each(lambda u: users.client.get(users.keys.user(u)),
                                                                          readers))
            cases.heading("(c) POST /watched")
            cases.add("the app, full", posts)
            cases.add("service.record_watch() + json.dumps, no Flask",
                      each(lambda u, c: json.dumps(service.record_watch(u, c)), watches))
            # The same work as bare_app.py's POST /watched, its scripts on the Store's commands:
            # what a watch would cost if the service's own code cost nothing.
            work = WatchFloor(services.store.client, settings, commands=services.store.commands)
            cases.add("its work alone: 2 scripts + the blend (WatchFloor)", each(work.watch, watches))
            cases.add("model.recommend(history, 10) only (scoring)",
                      each(lambda h: model.recommend(h, settings.cache_top_k), lambda: histories))
            cases.add("store.users.record_watch() only (Lua script)",
                      each(lambda u, c: users.record_watch(u, c, int(c[1:]), 1.7e9, None), watches))
            cases.add("store.users.save_prediction() only (script; returns early)",
                      each(lambda u, _c: users.save_prediction(u, 1, histories[0], list(range(10))), watches))
            print(f"per request, in one process ({n} requests per pass, best of {args.repeats}, interleaved):")
            cases.run(args.repeats)
            services.close()
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; the private redis-server has been stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
