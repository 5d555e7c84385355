"""nextwatch refine: cache the sequence model's blended prediction for every watched user."""

import argparse
import logging

from ..settings import SETTINGS_SPEC, load_settings
from .options import add_redis_option


def _batch(raw: str) -> int:
    """The setting's own rule, reported against --batch."""
    try:
        return SETTINGS_SPEC["refine_batch"][1](raw)
    except ValueError as problem:
        raise argparse.ArgumentTypeError(str(problem)) from None


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "refine", help="cache the sequence model's blended predictions for watched users",
        description="Read the Redis event log as a consumer group and, for each watched user, replace the "
                    "table's cached prediction with the sequence model's blended one, unless a newer watch "
                    "or model came first. Does nothing when the current model has no sequence part. Runs "
                    "until SIGTERM/SIGINT, which finish the current batch first.")
    add_redis_option(parser)
    parser.add_argument("--group", default="refiner", help="consumer group name (default refiner)")
    parser.add_argument("--consumer", default="refiner", help="consumer name within the group (default refiner)")
    parser.add_argument("--batch", type=_batch,
                        help="event log entries per batch (env NEXTWATCH_REFINE_BATCH, default 500)")
    parser.add_argument("--once", action="store_true", help="refine for what is in the log, then exit")
    return parser


def run(args) -> int:
    settings = load_settings(redis_url=args.redis_url, refine_batch=args.batch)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from ..refining import run_refine

    stats = run_refine(settings, group=args.group, consumer=args.consumer, once=args.once)
    print(f"{stats.events} events: {stats.refined} predictions refined, {stats.stale} stale, "
          f"{stats.skipped} skipped")
    return 0 if stats.ok else 1
