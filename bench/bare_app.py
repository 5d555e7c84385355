"""The floor for bench/serve.py: a WSGI app with no Flask that does one Redis GET of a small key
and answers a small JSON body, served by the production gunicorn configuration.

It reuses ``nextwatch.server.GunicornServer`` (same bind, worker count, worker class, timeouts,
keep-alive and logging) and only swaps the app it loads, and it reaches Redis with the
service's own client settings (``nextwatch.store.connection.connect``). Whatever the real API
costs beyond this is Flask, the service, its metrics and its extra Redis work.

    python bench/bare_app.py --port 5100 --workers 4      (NEXTWATCH_REDIS_URL names Redis)
"""

from __future__ import annotations

import argparse
import json

from nextwatch.server import GunicornServer, prepare_multiprocess_metrics
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


class BareServer(GunicornServer):
    """The production gunicorn settings, loading the bare app instead of the Flask one."""

    def load(self):
        return make_app(self.settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int)
    args = parser.parse_args(argv)
    settings = load_settings(port=args.port, workers=args.workers)
    prepare_multiprocess_metrics()  # as `nextwatch serve` does; the child_exit hook expects it
    BareServer(settings).run()


if __name__ == "__main__":
    main()
