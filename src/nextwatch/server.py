"""Serving the API with granian: several worker processes, metrics summed across them.

Why granian: its HTTP server is written in Rust (hyper), so parsing, keep-alive and writing
answers cost a fraction of what a Python server costs; measured side by side, a bare one-GET
WSGI app answered 2.6x the requests per second under granian as under gunicorn's gthread
workers (bench/serve.py, BENCHMARKS.md), and that server time was most of our API's.

What the server gives, and where each part lives:
- ``workers`` processes (NEXTWATCH_WORKERS), each running the WSGI app in ``threads`` Python
  threads (NEXTWATCH_THREADS) so one request's Redis wait overlaps another's work;
- a worker that dies is replaced (granian's respawn); its metric files stay, so the sums in
  /metrics never go back, and its per-process gauges are dropped (metrics.render);
- SIGTERM and Ctrl-C stop accepting, let the workers finish what they hold, and kill what is
  still running after ``STOP_TIMEOUT_SECONDS``;
- keep-alive on, a 30 s limit to receive a request's headers (slow clients cannot hold a
  worker), the body limit and the JSON refusals of over-long request lines and headers in the
  app (api/serving_routes.py, api/inputs.py).

Kept outside api/ on purpose: it must set up prometheus_client before the api package (and
with it nextwatch.metrics) is imported in any process. Settings reach the workers through the
environment (``Settings.environment``), so a flag given to `nextwatch serve` holds in every
worker.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile

from .settings import Settings, load_settings

STOP_TIMEOUT_SECONDS = 10
HEADER_READ_TIMEOUT_MS = 30_000


def prepare_multiprocess_metrics() -> str:
    """Point prometheus_client at a fresh folder shared by all workers.

    Must run before anything imports ``nextwatch.metrics``: prometheus_client picks its value
    storage when the metrics are created. A stale folder from a previous run would add old
    counts to the new ones, so an inherited one is emptied.
    """
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder, exist_ok=True)
    else:
        folder = tempfile.mkdtemp(prefix="nextwatch-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    return folder


def build_app():
    """The WSGI app of one worker process (granian calls this in each worker)."""
    from .api import create_app

    app = create_app(load_settings())
    # Everything loaded so far (Flask, numpy, the app) lives as long as the worker: moving it
    # out of the collector's sight keeps each garbage collection small on the request path.
    gc.freeze()
    return app


def granian_server(settings: Settings, target: str = "nextwatch.server:build_app"):
    """The granian server for ``settings`` (not started): ``target`` is a factory of the WSGI
    app, imported in each worker."""
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    return Server(
        target,
        factory=True,
        interface=Interfaces.WSGI,
        address=settings.host,
        port=settings.port,
        workers=settings.workers,
        blocking_threads=settings.threads,
        http=HTTPModes.http1,
        websockets=False,
        http1_settings=HTTP1Settings(header_read_timeout=HEADER_READ_TIMEOUT_MS, keep_alive=True),
        respawn_failed_workers=True,
        respawn_interval=0.5,
        workers_kill_timeout=STOP_TIMEOUT_SECONDS,
        log_level=LogLevels.warning,
        process_name="nextwatch-api",
    )


def serve(settings: Settings, before_start=None) -> None:
    """Serve until SIGTERM or Ctrl-C. ``before_start(settings)`` runs once the metrics are set
    up (anything it imports may create metrics) and before the workers start."""
    prepare_multiprocess_metrics()
    os.environ.update(settings.environment())
    if before_start is not None:
        before_start(settings)
    granian_server(settings).serve()
