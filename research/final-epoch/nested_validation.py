"""How the final fit should treat the tuned network, judged without the test targets.

`nextwatch evaluate` tunes on each user's second-to-last title (validation) and reports the last
(test); its final fit continues the tuned network for ``sequence_fit.FINAL_EPOCHS`` epochs on
the events with the validation titles added. Whether that final epoch helps cannot be judged on
validation, which it trains on. So this script drops every user's last title from a
``sequences`` file (the test targets never enter) and runs `evaluate` on what is left: there
the validation titles play the test's part and the titles before them the validation's.

    .venv/bin/python research/final-epoch/nested_validation.py ../shared/data/amazon-beauty/Beauty.txt \
        --final-epochs 1 -- --json

``--final-epochs`` replaces FINAL_EPOCHS (0: publish the tuned weights as they are). What
follows ``--`` is added to the `evaluate` command line. The shortened copy lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from nextwatch.cli import main as nextwatch_main
from nextwatch.training import sequence_fit


def without_last_titles(source: Path, target: Path) -> None:
    """Each line is a user then their titles in order: keep all but the last title."""
    with source.open() as lines, target.open("w") as out:
        for line in lines:
            fields = line.split()
            if len(fields) > 2:
                out.write(" ".join(fields[:-1]) + "\n")


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--final-epochs", type=int, default=sequence_fit.FINAL_EPOCHS)
    args = parser.parse_args(argv[:split])
    sequence_fit.FINAL_EPOCHS = args.final_epochs  # read by final_sequence when it runs
    print(f"final epochs {args.final_epochs}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as folder:
        shortened = Path(folder) / args.file.name
        without_last_titles(args.file, shortened)
        return nextwatch_main(["evaluate", str(shortened), "--format", "sequences", *argv[split + 1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
