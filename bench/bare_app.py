"""The floor for bench/serve.py: a WSGI app with no Flask that does one Redis GET of a small key
and answers a small JSON body.

With ``--server granian`` (the default) it runs in ``nextwatch.server.granian_server``, the
production server and configuration (bind, workers, threads, keep-alive, timeouts); only the
app it loads differs. It reaches Redis with the service's own client settings
(``nextwatch.store.connection.connect``). Whatever the real API costs beyond this is Flask, the
service, its metrics and its extra Redis work. ``--server gunicorn`` serves the same app with
gunicorn's gthread workers as the project ran them before (4 threads, keep-alive 5 s), when
gunicorn is installed (`pip install gunicorn`): what the change of server bought.

    python bench/bare_app.py --port 5100 --workers 4 [--server granian|gunicorn]
    (NEXTWATCH_REDIS_URL names Redis)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from nextwatch.server import granian_server, prepare_multiprocess_metrics
from nextwatch.settings import Settings, load_settings

SMALL_KEY = "bench:small"
SMALL_VALUE = b"T00042"


def make_app(settings: Settings):
    from nextwatch.store.connection import connect

    client = connect(settings)

    def app(environ, start_response):
        value = client.get(SMALL_KEY)
        body = json.dumps({"recommendation": value.decode() if value else None, "cache_hit": True}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def build():
    """granian's factory, called in each worker: the settings come through the environment."""
    return make_app(load_settings())


def serve_with_gunicorn(settings: Settings) -> None:
    from gunicorn.app.base import BaseApplication

    class Bare(BaseApplication):
        def load_config(self):
            for key, value in {"bind": f"{settings.host}:{settings.port}", "workers": settings.workers,
                               "worker_class": "gthread", "threads": 4, "keepalive": 5, "timeout": 30,
                               "accesslog": None, "loglevel": "warning"}.items():
                self.cfg.set(key, value)

        def load(self):
            return make_app(settings)

    Bare().run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--server", choices=("granian", "gunicorn"), default="granian")
    args = parser.parse_args(argv)
    settings = load_settings(port=args.port, workers=args.workers)
    prepare_multiprocess_metrics()  # as `nextwatch serve` does
    if args.server == "gunicorn":
        serve_with_gunicorn(settings)
        return
    os.environ.update(settings.environment())
    # The workers import this module by name: bench/ must be on their path.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(os.path.abspath(__file__)),
                                                             os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    granian_server(settings, target="bare_app:build").serve()


if __name__ == "__main__":
    main()
