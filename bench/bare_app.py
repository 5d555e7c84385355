"""The floor for bench/serve.py: a WSGI app with no Flask that does one Redis GET of a small key
and answers a small JSON body.

With ``--server granian`` (the default) it runs in ``nextwatch.server.granian_server``, the
production server and configuration (bind, workers, threads, keep-alive, timeouts); only the
app it loads differs. It reaches Redis with the service's own client settings
(``nextwatch.store.connection.connect``). Whatever the real API costs beyond this is Flask, the
service, its metrics and its extra Redis work. ``--server gunicorn`` serves the same app with
gunicorn's gthread workers as the project ran them before (4 threads, keep-alive 5 s), when
gunicorn is installed (`pip install gunicorn`): what the change of server bought.

It also answers ``POST /watched`` with a watch's own work written plainly (bench/serve.py's (w)):
read the body, the store's watch script (history appended, event logged), the current model's top
10 for the new history and the store's script that caches them, through the client's own
commands (its pool, ``register_script``); no Flask, rules, experiments, metrics or checks beyond
``json.loads``. It measures what that work costs without the service's code, and without the
service's shortcuts (``store/direct_commands.py``) either.

    python bench/bare_app.py --port 5100 --workers 4 [--server granian|gunicorn]
    (NEXTWATCH_REDIS_URL names Redis)
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys

from nextwatch.server import granian_server, prepare_multiprocess_metrics
from nextwatch.settings import Settings, load_settings

SMALL_KEY = "bench:small"
SMALL_VALUE = b"T00042"


def make_app(settings: Settings):
    from nextwatch.store.connection import connect

    client = connect(settings)
    watch = WatchFloor(client, settings)

    def app(environ, start_response):
        if environ["REQUEST_METHOD"] == "POST":
            body = watch(environ)
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        value = client.get(SMALL_KEY)
        body = json.dumps({"recommendation": value.decode() if value else None, "cache_hit": True}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


class WatchFloor:
    """``POST /watched`` with nothing but a watch's own work (module docstring): two scripts of the
    store and the model's top 10. The model and the title ids are loaded once, at the worker's
    start. The scripts go through the client's ``register_script``, or, given ``commands`` (a
    Store's), through those (``bench/app_cost.py``: the work with the service's shortcuts)."""

    def __init__(self, client, settings: Settings, commands=None):
        from nextwatch.keys import Keys
        from nextwatch.store.catalog import CatalogStore
        from nextwatch.store.commands import StoreScript
        from nextwatch.store.models import ModelStore

        self.settings = settings
        self.keys = Keys(settings.key_prefix, settings.shards)
        models = ModelStore(client, self.keys)
        self.version = models.current_version()
        self.model = models.load(self.version) if self.version else None
        self.title_ids = CatalogStore(client, self.keys).all_ids()
        self.codes = {title: code for code, title in enumerate(self.title_ids)}
        record, cache = StoreScript.of("user_state.lua", "watch.lua"), StoreScript.of("user_state.lua", "cache_prediction.lua")
        if commands is None:
            self.record, self.cache = client.register_script(record.source), client.register_script(cache.source)
        else:
            self.record = lambda keys, args: commands.script(record.sha, record.source, keys, args)
            self.cache = lambda keys, args: commands.script(cache.sha, cache.source, keys, args)

    def __call__(self, environ) -> bytes:
        body = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
        user, title = body["user_id"], body["content_id"]
        top = self.watch(user, title)
        return json.dumps({"user_id": user, "watched": title,
                           "predicted_next": self.title_ids[top[0]] if top else None}).encode()

    def watch(self, user: str, title: str) -> list[int]:
        """Record the watch, rank the new history, cache the ranking: the top codes."""
        import time

        from nextwatch.store.user_state import CachedPrediction, decode_codes

        settings, keys = self.settings, self.keys
        user_key = keys.user(user)
        reply = self.record(
            keys=[user_key, keys.user_event_log(user), keys.event_id(user, "-")],
            args=[struct.pack("<I", self.codes[title]), settings.history_length, user, title, repr(time.time()), "",
                  settings.event_id_ttl_seconds, max(1, settings.event_log_max_length // keys.shards), self.version,
                  "0", settings.impression_window_seconds])
        history = decode_codes(reply[1])
        top = self.model.recommend(history, settings.cache_top_k)
        self.cache(keys=[user_key], args=[reply[1], CachedPrediction.encode(self.version, history, top), "1"])
        return top


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
