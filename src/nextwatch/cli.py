"""The `nextwatch` command: serve | train | demo.

Flags override NEXTWATCH_* environment variables (settings.py); a bad value stops the command
with a message naming the variable or flag. Heavy imports (Flask, Spark) happen inside each
subcommand, so `nextwatch --help` is instant and `serve` can set up metrics before Flask loads.
"""

from __future__ import annotations

import argparse
import sys

from .settings import SettingsError, load_settings


def _add_redis(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", help="Redis URL (env NEXTWATCH_REDIS_URL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nextwatch", description="Real-time 'what to watch next' recommendations."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve the HTTP API with gunicorn",
                                description="Serve the HTTP API with gunicorn worker processes.")
    _add_redis(serve)
    serve.add_argument("--host", help="listen address (env NEXTWATCH_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (env NEXTWATCH_PORT, default 5000)")
    serve.add_argument("--workers", type=int, help="worker processes (env NEXTWATCH_WORKERS, default 4)")

    train = commands.add_parser("train", help="train a model with Spark and publish it",
                                description="Train a next-title model with Spark and publish it to Redis.")
    _add_redis(train)
    train.add_argument("--spark-master", help="Spark master URL (env NEXTWATCH_SPARK_MASTER, default local[2])")
    train.add_argument("--events", action="append", default=[], metavar="PATH",
                       help="event file or folder (Parquet, CSV, JSON Lines) with user_id, content_id, "
                            "timestamp; repeatable")
    train.add_argument("--no-event-log", action="store_true",
                       help="do not read the live events in the Redis event log")
    train.add_argument("--top-n", type=int, default=50, help="next-title candidates kept per title")

    demo = commands.add_parser("demo", help="run the whole service locally with a generated catalog",
                               description="Start a private redis-server, generate the demo catalog and "
                                           "watch history, train the first model and serve the API.")
    demo.add_argument("--port", type=int, help="API port (env NEXTWATCH_PORT, default 5000)")
    demo.add_argument("--workers", type=int, help="API worker processes (default 4)")
    demo.add_argument("--redis-port", type=int, default=6380,
                      help="port of the private redis-server (default 6380, another free one if taken)")
    demo.add_argument("--data-dir", help="folder for Redis data and the demo files (default .nextwatch)")
    demo.add_argument("--seed", type=int, default=7, help="seed of the demo catalog")
    demo.add_argument("--retrain", action="store_true", help="train again even if a model is published")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            settings = load_settings(redis_url=args.redis_url, host=args.host, port=args.port, workers=args.workers)
            from .server import serve

            serve(settings)
        elif args.command == "train":
            settings = load_settings(redis_url=args.redis_url, spark_master=args.spark_master)
            return _train(settings, args)
        elif args.command == "demo":
            settings = load_settings(port=args.port, workers=args.workers, data_dir=args.data_dir)
            from .localstack.demo import run_demo

            return run_demo(settings, redis_port=args.redis_port, seed=args.seed, retrain=args.retrain)
    except SettingsError as problem:
        print(f"nextwatch: {problem}", file=sys.stderr)
        return 2
    return 0


def _train(settings, args) -> int:
    from .store import Store
    from .training.job import TrainingError, train
    from .training.spark import spark_session

    store = Store.from_settings(settings)
    spark = spark_session(settings.spark_master)
    try:
        result = train(settings, store, spark, sources=args.events, include_event_log=not args.no_event_log,
                       top_n=args.top_n)
    except (TrainingError, FileNotFoundError, ValueError) as problem:
        print(f"nextwatch train: {problem}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    print(f"published model version {result.version}: {result.events} events, {result.titles} titles, "
          f"{result.duration_seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
