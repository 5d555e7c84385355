"""nextwatch archive: copy every accepted watch event from the event log to Parquet, once."""

import argparse
import logging
import sys

from ..settings import load_settings
from .options import add_redis_option


def _positive(kind):
    def parse(raw: str):
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {raw!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {raw}")
        return value

    return parse


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "archive", help="archive the event log to Parquet files, one folder per day",
        description="Read every shard's event-log stream in Redis as one consumer group and write every "
                    "event exactly once to Parquet files under day=YYYY-MM-DD folders, acknowledging only "
                    "durably written events. Runs until SIGTERM/SIGINT, which write the current batch first.")
    add_redis_option(parser)
    parser.add_argument("--out", help="archive folder (env NEXTWATCH_ARCHIVE_DIR, default .nextwatch/archive)")
    parser.add_argument("--group", default="archiver", help="consumer group name (default archiver)")
    parser.add_argument("--consumer", default="archiver", help="consumer name within the group (default archiver)")
    parser.add_argument("--batch", type=_positive(int), default=10_000,
                        help="events per batch at most, over all shards (default 10000)")
    parser.add_argument("--flush-seconds", type=_positive(float), default=5.0,
                        help="write a batch this long after its first event (default 5)")
    parser.add_argument("--once", action="store_true", help="archive what is in the log, then exit")
    return parser


def run(args) -> int:
    settings = load_settings(redis_url=args.redis_url, archive_dir=args.out)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from ..archiving import ArchiveBusy, ArchiveUnusable, run_archive

    try:
        stats = run_archive(settings, group=args.group, consumer=args.consumer, batch_size=args.batch,
                            flush_seconds=args.flush_seconds, once=args.once)
    except (ArchiveBusy, ArchiveUnusable) as problem:
        print(f"nextwatch archive: {problem}", file=sys.stderr)
        return 2
    print(f"archived {stats.events_written} events in {stats.files_written} files to {settings.archive_dir}; "
          f"{stats.duplicates_skipped} already archived, {stats.unreadable} unreadable")
    return 0 if stats.ok else 1
