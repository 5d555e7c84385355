"""Serving the API with gunicorn: several worker processes, metrics summed across them.

Kept outside api/ on purpose: it must set up prometheus_client before the api package (and
with it nextwatch.metrics) is imported in any process."""

from __future__ import annotations

import os
import shutil
import tempfile

from gunicorn.app.base import BaseApplication

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


def _worker_exited(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


class GunicornServer(BaseApplication):
    def __init__(self, settings: Settings):
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        options = {
            "bind": f"{self.settings.host}:{self.settings.port}",
            "workers": self.settings.workers,
            "worker_class": "sync",
            "timeout": 30,
            "graceful_timeout": 10,
            "keepalive": 2,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
            "proc_name": "nextwatch-api",
            "child_exit": _worker_exited,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        from .api import create_app

        return create_app(self.settings)


def serve(settings: Settings) -> None:
    prepare_multiprocess_metrics()
    GunicornServer(settings).run()
