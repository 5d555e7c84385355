"""nextwatch import: a public or own data set into an event file for training, titles into the
catalog."""

import sys
import time
from pathlib import Path

from ..settings import load_settings
from .options import add_redis_option


def add_parser(subparsers):
    from ..datasets.importing import ALL_TITLE_FORMATS
    from ..datasets.readers import EVENT_FORMATS

    parser = subparsers.add_parser(
        "import", help="import a data set (MovieLens, CSV, JSON Lines, Parquet, sequences) or title metadata",
        description="Read a data set's events into a Parquet file for `nextwatch train --events`, and its "
                    "titles into the catalog. Bad rows are counted and reported with their line numbers. "
                    "`nextwatch import --titles FILE` alone loads title metadata (CSV or JSON Lines: name, "
                    "genres, year, maturity, availability window, regions, series/season/episode); a metadata "
                    "file with any bad row is refused whole.")
    add_redis_option(parser)
    parser.add_argument("path", nargs="?", help="the events file (u.data, ratings.dat, ratings.csv, ...); "
                                                "leave it out to import titles alone")
    parser.add_argument("--format", choices=EVENT_FORMATS, help="format of the events file")
    parser.add_argument("--titles", help="the titles file (u.item, movies.dat, movies.csv, or title metadata "
                                         "as .csv / .jsonl)")
    parser.add_argument("--titles-format", choices=ALL_TITLE_FORMATS, help="format of the titles file "
                        "(default: from its name for .csv/.jsonl when no events are imported, else the events "
                        "format)")
    parser.add_argument("--out", help="the Parquet file to write (default DATA_DIR/imports/<name>.parquet)")
    parser.add_argument("--show-problems", type=int, default=20, metavar="N", help="bad rows to list (default 20)")
    return parser


def run(args) -> int:
    from ..datasets.importing import BadTitleRows, import_dataset

    if args.path is None and not args.titles:
        print("nextwatch import: give an events file (with --format), --titles FILE, or both", file=sys.stderr)
        return 2
    if args.path is not None and args.format is None:
        print("nextwatch import: --format is required with an events file", file=sys.stderr)
        return 2
    settings = load_settings(redis_url=args.redis_url)
    out = None
    if args.path is not None:
        out = Path(args.out or Path(settings.data_dir) / "imports" / f"{Path(args.path).stem}.parquet")
    titles_format = args.titles_format or _titles_format(args)
    save_titles = store = None
    if args.titles:
        from ..store import Store

        store = Store.from_settings(settings)
        save_titles = store.catalog.save_info
    try:
        report = import_dataset(args.path, args.format, out, args.titles, titles_format, save_titles,
                                progress=ProgressBar(f"reading {Path(args.path).name}") if args.path else None)
    except BadTitleRows as refused:
        print(f"nextwatch import: {args.titles}: {refused}", file=sys.stderr)
        _print_problems(refused.result.problem_count, refused.result.problems, args.show_problems)
        return 2
    except (OSError, ValueError) as problem:
        print(f"\nnextwatch import: {problem}", file=sys.stderr)
        return 2
    finally:
        if store is not None:
            store.close()
    if report.events_path is not None:
        print(f"\n{report.events} events -> {report.events_path} in {report.seconds:.1f} s")
    if report.bad_rows:
        print(f"{report.bad_rows} bad rows were not imported:", file=sys.stderr)
        _print_problems(report.bad_rows, report.problems, args.show_problems)
    if args.titles:
        print(f"{report.titles} titles stored in the catalog"
              + (f" ({report.bad_title_rows} bad title rows skipped)" if report.bad_title_rows else ""))
    if report.events_path is not None:
        print(f"next: nextwatch train --events {report.events_path}")
    return 0


def _titles_format(args) -> str | None:
    """.csv / .jsonl title files alone are metadata; next to events, the events' format."""
    if args.path is None:
        suffix = Path(args.titles).suffix.lower()
        return {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}.get(suffix)
    return args.format


def _print_problems(count: int, problems: list[tuple[int, str]], shown: int) -> None:
    for line, reason in problems[:shown]:
        print(f"  line {line}: {reason}", file=sys.stderr)
    if count > shown:
        print(f"  ... and {count - min(shown, len(problems))} more", file=sys.stderr)


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
