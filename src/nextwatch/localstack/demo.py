"""`nextwatch demo`: the whole service on one machine with embedded defaults.

A private redis-server (AOF on, data in the data folder), the generated demo catalog and watch
history, a first model trained with Spark in local mode, and the API under gunicorn. A second
run reuses all of it and starts in seconds. Ctrl-C stops every process it started.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from ..settings import Settings
from .redis_server import RedisServer, free_port
from .supervisor import Supervisor, http_ok

CURL_EXAMPLES = """\
nextwatch is serving on http://localhost:{port}  (Redis: {redis_url}, model version {version})
Try, in another terminal:
  curl -X POST http://localhost:{port}/watched -H "Content-Type: application/json" \\
       -d '{{"user_id": "U999", "content_id": "C1010"}}'
  curl http://localhost:{port}/recommend/U999
  curl http://localhost:{port}/recommend/U1234
  curl http://localhost:{port}/metrics
Press Ctrl-C to stop everything.
"""


KEY_HINT = """\
API keys are configured in this Redis: add -H "Authorization: Bearer <key>" to the POST
(`nextwatch keys list` names them; `nextwatch keys add NAME --role write` makes a new one).
"""


class _Interrupted(Exception):
    pass


def _raise_interrupted(signum, frame):
    raise _Interrupted()


def run_demo(settings: Settings, redis_port: int = 6380, seed: int = 7, retrain: bool = False) -> int:
    data_dir = Path(settings.data_dir)
    if free_port(settings.port) != settings.port:
        print(f"nextwatch demo: port {settings.port} is in use; choose another with --port or NEXTWATCH_PORT",
              file=sys.stderr)
        return 1
    supervisor = Supervisor()
    redis = RedisServer(data_dir / "redis", port=free_port(redis_port), persistent=True)
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        print(f"starting redis-server on 127.0.0.1:{redis.port} (data in {redis.data_dir}, AOF on)")
        redis.start()
        settings = settings.with_overrides(redis_url=redis.url)
        env = {"NEXTWATCH_REDIS_URL": redis.url, "SPARK_LOCAL_IP": "127.0.0.1"}
        version = _prepare_model(settings, supervisor, env, data_dir / "demo", seed, retrain)
        command = [sys.executable, "-m", "nextwatch.cli", "serve", "--host", settings.host,
                   "--port", str(settings.port), "--workers", str(settings.workers)]
        # `nextwatch serve` prints whether API keys are configured (writes open or not).
        supervisor.start("api", command, env, ready=http_ok(f"http://127.0.0.1:{settings.port}/healthz"))
        examples = CURL_EXAMPLES.format(port=settings.port, redis_url=redis.url, version=version)
        if _api_keys_configured(settings):
            examples = examples.replace("Press Ctrl-C", KEY_HINT + "Press Ctrl-C")
        print(examples, flush=True)
        while (exited := supervisor.first_exited()) is None:
            time.sleep(0.5)
        print(f"nextwatch demo: {exited[0]} exited with status {exited[1]}; stopping", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Interrupted):
        print("\nstopping ...", flush=True)
        return 0
    finally:
        supervisor.stop_all()
        redis.stop()
        signal.signal(signal.SIGTERM, previous)
        print("stopped: no nextwatch process is left running", flush=True)


def _prepare_model(settings, supervisor, env, demo_dir: Path, seed: int, retrain: bool) -> int:
    """Generate the catalog once, store it in Redis, train unless a model is already published."""
    from ..datasets.demo import DemoConfig, read_catalog, write_demo_dataset
    from ..store import Store

    store = Store.from_settings(settings)
    try:
        catalog_file, events_file = demo_dir / "catalog.jsonl", demo_dir / "events.parquet"
        if not (catalog_file.exists() and events_file.exists()):
            print(f"generating the demo catalog and watch history in {demo_dir} ...", flush=True)
            write_demo_dataset(demo_dir, DemoConfig(seed=seed))
        if store.catalog.first_title() is None:
            store.catalog.save_info(read_catalog(catalog_file))
        version = store.models.current_version()
        if version and not retrain:
            print(f"model version {version} is already published (use --retrain to train again)")
            return version
        print("training the first model with Spark in local mode ...", flush=True)
        status = supervisor.run("train", [sys.executable, "-m", "nextwatch.cli", "train",
                                          "--events", str(events_file)], env)
        if status != 0:
            raise RuntimeError(f"training failed with status {status}")
        return store.models.current_version()
    finally:
        store.close()


def _api_keys_configured(settings) -> bool:
    from ..errors import StoreUnavailable
    from ..store import Store

    store = Store.from_settings(settings)
    try:
        return bool(store.api_keys.records())
    except StoreUnavailable:
        return False
    finally:
        store.close()
