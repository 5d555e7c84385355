"""nextwatch train: build a model with Spark from the event log and event files, publish it."""

import sys

from ..settings import load_settings
from .options import add_redis_option


def add_parser(subparsers):
    parser = subparsers.add_parser("train", help="train a model with Spark and publish it",
                                   description="Train a next-title model with Spark and publish it to Redis.")
    add_redis_option(parser)
    parser.add_argument("--spark-master", help="Spark master URL (env NEXTWATCH_SPARK_MASTER, default local[2])")
    parser.add_argument("--events", action="append", default=[], metavar="PATH",
                        help="event file or folder (Parquet, CSV, JSON Lines) with user_id, content_id, "
                             "timestamp; repeatable")
    parser.add_argument("--no-event-log", action="store_true",
                        help="do not read the live events in the Redis event log")
    parser.add_argument("--top-n", type=int, default=50, help="next-title candidates kept per title")
    return parser


def run(args) -> int:
    settings = load_settings(redis_url=args.redis_url, spark_master=args.spark_master)
    from ..store import Store
    from ..training.job import TrainingError, train
    from ..training.spark import spark_session

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
