"""How the final fit should treat the tuned network, judged without the test targets.

`nextwatch evaluate` tunes on each user's second-to-last title (validation) and reports the last
(test); its final fit continues the tuned network for ``sequence_fit.FINAL_EPOCHS`` epochs on
the events with the validation titles added. Whether that final epoch helps cannot be judged on
validation, which it trains on. So this script drops every user's last title from a
``sequences`` file (the test targets never enter) and runs `evaluate` on what is left: there
the validation titles play the test's part and the titles before them the validation's.

    .venv/bin/python research/final-epoch/nested_validation.py ../shared/data/amazon-beauty/Beauty.txt \
        --final-epochs 1 -- --json

``--final-epochs`` replaces FINAL_EPOCHS (0: publish the tuned weights as they are; ``best``: as
many epochs as the tuning kept). What follows ``--`` is added to the `evaluate` command line. The
shortened copy lives in a temporary folder.

``--format`` reads other event files (MovieLens): they are filtered and ordered as `evaluate`
does (``leave_last_out``), and every user's titles but the test target are written as a
``sequences`` file, which `evaluate` then splits again.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from nextwatch.cli import main as nextwatch_main
from nextwatch.datasets.readers import read_events
from nextwatch.evaluation.protocol import leave_last_out
from nextwatch.training import sequence_fit


def without_last_titles(source: Path, target: Path) -> None:
    """Each line is a user then their titles in order: keep all but the last title."""
    with source.open() as lines, target.open("w") as out:
        for line in lines:
            fields = line.split()
            if len(fields) > 2:
                out.write(" ".join(fields[:-1]) + "\n")


def without_test_targets(source: Path, fmt: str, target: Path) -> None:
    """The events of ``source`` as `evaluate` filters and orders them, less each user's test target."""
    split = leave_last_out(read_events(source, fmt).events)
    with target.open("w") as out:
        for user, history in zip(split.users, split.test_histories):
            out.write(" ".join([str(user), *split.items[history].astype(str)]) + "\n")


def final_epochs(value: str) -> int | None:
    return None if value == "best" else int(value)


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--final-epochs", type=final_epochs, default=sequence_fit.FINAL_EPOCHS,
                        help="epochs of the final training (an integer, or best: the tuning's kept count)")
    parser.add_argument("--format", default="sequences", help="the file's event format (default sequences)")
    args = parser.parse_args(argv[:split])
    sequence_fit.FINAL_EPOCHS = args.final_epochs  # read by final_sequence when it runs
    chosen = "best (as many as the tuning kept)" if args.final_epochs is None else args.final_epochs
    print(f"final epochs {chosen}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as folder:
        shortened = Path(folder) / args.file.name
        if args.format == "sequences":
            without_last_titles(args.file, shortened)
        else:
            without_test_targets(args.file, args.format, shortened)
        return nextwatch_main(["evaluate", str(shortened), "--format", "sequences", *argv[split + 1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
