"""nextwatch import: a public or own data set into an event file for training, titles into the
catalog."""

import sys
import time
from pathlib import Path

from ..settings import load_settings
from .options import add_redis_option


def add_parser(subparsers):
    from ..datasets.readers import EVENT_FORMATS
    from ..datasets.title_readers import TITLE_FORMATS

    parser = subparsers.add_parser(
        "import", help="import a data set (MovieLens, CSV, JSON Lines, Parquet, sequences)",
        description="Read a data set's events into a Parquet file for `nextwatch train --events`, and its "
                    "titles into the catalog. Bad rows are counted and reported with their line numbers.")
    add_redis_option(parser)
    parser.add_argument("path", help="the events file (u.data, ratings.dat, ratings.csv, ...)")
    parser.add_argument("--format", required=True, choices=EVENT_FORMATS, help="format of the events file")
    parser.add_argument("--titles", help="the titles file (u.item, movies.dat, movies.csv)")
    parser.add_argument("--titles-format", choices=TITLE_FORMATS, help="format of the titles file "
                        "(default: the events format)")
    parser.add_argument("--out", help="the Parquet file to write (default DATA_DIR/imports/<name>.parquet)")
    parser.add_argument("--show-problems", type=int, default=20, metavar="N", help="bad rows to list (default 20)")
    return parser


def run(args) -> int:
    from ..datasets.importing import import_dataset

    settings = load_settings(redis_url=args.redis_url)
    out = Path(args.out or Path(settings.data_dir) / "imports" / f"{Path(args.path).stem}.parquet")
    save_titles = None
    if args.titles:
        from ..store import Store

        save_titles = Store.from_settings(settings).catalog.save_info
    try:
        report = import_dataset(args.path, args.format, out, args.titles, args.titles_format, save_titles,
                                progress=ProgressBar(f"reading {Path(args.path).name}"))
    except (OSError, ValueError) as problem:
        print(f"\nnextwatch import: {problem}", file=sys.stderr)
        return 2
    print(f"\n{report.events} events -> {report.events_path} in {report.seconds:.1f} s")
    if report.bad_rows:
        print(f"{report.bad_rows} bad rows were not imported:", file=sys.stderr)
        for line, reason in report.problems[: args.show_problems]:
            print(f"  line {line}: {reason}", file=sys.stderr)
        if report.bad_rows > args.show_problems:
            print(f"  ... and {report.bad_rows - min(args.show_problems, len(report.problems))} more",
                  file=sys.stderr)
    if args.titles:
        print(f"{report.titles} titles stored in the catalog"
              + (f" ({report.bad_title_rows} bad title rows skipped)" if report.bad_title_rows else ""))
    print(f"next: nextwatch train --events {report.events_path}")
    return 0


class ProgressBar:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, label: str, width: int = 30):
        self.label, self.width, self.drawn = label, width, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.drawn < 0.1 and done < total:
            return
        self.drawn = now
        share = done / total if total else 1.0
        filled = int(share * self.width)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {share:6.1%}")
        sys.stderr.flush()
