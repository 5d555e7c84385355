"""Serving the API with gunicorn: several worker processes, metrics summed across them.

Kept outside api/ on purpose: it must set up prometheus_client before the api package (and
with it nextwatch.metrics) is imported in any process."""

from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile

from gunicorn.app.base import BaseApplication
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import ThreadWorker

from .settings import Settings


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


def _worker_ready(worker) -> None:
    # Everything loaded so far (Flask, numpy, the app) lives as long as the worker: moving it
    # out of the collector's sight keeps each garbage collection small on the request path.
    gc.freeze()


def _worker_exited(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


# Requests gunicorn refuses before the app sees them: status, reason, error name.
_REFUSALS = (
    (http_errors.LimitRequestLine, 414, "URI Too Long", "request_line_too_long"),
    (http_errors.LimitRequestHeaders, 431, "Request Header Fields Too Large", "headers_too_large"),
    ((http_errors.InvalidRequestLine, http_errors.InvalidRequestMethod, http_errors.InvalidHTTPVersion,
      http_errors.InvalidHeader, http_errors.InvalidHeaderName), 400, "Bad Request", "malformed_request"),
)
MAX_REQUEST_LINE = 8190  # bytes: the most gunicorn allows; ids and query strings are far shorter


class JsonErrorWorker(ThreadWorker):
    """gunicorn's threaded worker, with the requests it refuses itself (a request line too
    long, malformed headers) answered in the API's JSON error shape instead of an HTML page."""

    def handle_error(self, req, client, addr, exc):
        for kinds, status, reason, name in _REFUSALS:
            if isinstance(exc, kinds):
                body = json.dumps({"error": name, "detail": str(exc) or reason}).encode()
                head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
                try:
                    client.sendall(head + body)
                except OSError:
                    pass  # the client has gone; nothing to tell it
                return
        super().handle_error(req, client, addr, exc)


class GunicornServer(BaseApplication):
    def __init__(self, settings: Settings):
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        options = {
            "bind": f"{self.settings.host}:{self.settings.port}",
            "workers": self.settings.workers,
            # Threads let a worker overlap one request's Redis round trips with another's work,
            # and keep-alive spares clients a TCP handshake per request: with these, POST
            # /watched served 1.9x and a cache hit 1.4x the requests/s of sync workers in
            # bench/serve.py on the same machine (BENCHMARKS.md).
            "worker_class": JsonErrorWorker,  # gthread, refusing in JSON
            "threads": 4,
            "timeout": 30,
            "graceful_timeout": 10,
            "keepalive": 5,
            "limit_request_line": MAX_REQUEST_LINE,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
            "proc_name": "nextwatch-api",
            "child_exit": _worker_exited,
            "post_worker_init": _worker_ready,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        from .api import create_app

        return create_app(self.settings)


def serve(settings: Settings) -> None:
    prepare_multiprocess_metrics()
    GunicornServer(settings).run()
