"""nextwatch train: build a model with Spark from the event log and event files, publish it.

With ``--every 15m`` it keeps running and trains on that schedule (the stack's trainer): a run
that fails is reported and the next one is tried on time, while the last good model keeps
serving; SIGTERM or Ctrl-C between runs stops it at once, during a run as soon as it ends.
"""

import logging
import re
import signal
import sys
import threading
import time

from ..settings import load_settings
from .options import add_redis_option

log = logging.getLogger("nextwatch.train")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """'90s', '15m', '2h', '1d' -> seconds (argparse type)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not match or float(match.group(1)) <= 0:
        import argparse

        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 15m, 2h or 1d, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


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
    parser.add_argument("--top-n", type=int, default=100, help="next titles kept per title (default 100)")
    parser.add_argument("--every", type=duration, metavar="DURATION",
                        help="keep running and train on this schedule, e.g. 15m")
    return parser


def run(args) -> int:
    settings = load_settings(redis_url=args.redis_url, spark_master=args.spark_master)
    from ..store import Store
    from ..training.spark import spark_session

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    store = Store.from_settings(settings)
    spark = spark_session(settings.spark_master)
    try:
        if args.every is None:
            return _train_once(settings, store, spark, args)
        return _train_on_schedule(settings, store, spark, args)
    finally:
        spark.stop()
        store.close()


def _train_once(settings, store, spark, args) -> int:
    from ..errors import StoreUnavailable
    from ..training.job import TrainingError, train

    try:
        result = train(settings, store, spark, sources=args.events, include_event_log=not args.no_event_log,
                       top_n=args.top_n)
    except (TrainingError, FileNotFoundError, ValueError, StoreUnavailable) as problem:
        print(f"nextwatch train: {problem}", file=sys.stderr)
        return 2
    sequence = (f"sequence model weight {result.sequence_weight:g}, {result.sequence_epochs} epochs"
                if result.sequence_weight else "table alone")
    print(f"published model version {result.version}: {result.events} events, {result.titles} titles, "
          f"{result.duration_seconds:.1f} s, {sequence}", flush=True)
    return 0


def _train_on_schedule(settings, store, spark, args) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("training every %.0f s", args.every)
    while not stop.is_set():
        started = time.monotonic()
        try:
            _train_once(settings, store, spark, args)
        except Exception:  # a failed run must not end the schedule; the last model keeps serving
            log.exception("training run failed; the next run is tried on schedule")
        stop.wait(max(0.0, args.every - (time.monotonic() - started)))
    log.info("trainer stopped")
    return 0
