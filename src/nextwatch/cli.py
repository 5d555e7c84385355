"""The `nextwatch` command. Each subcommand lives in its own module under ``commands/``.

Flags override NEXTWATCH_* environment variables (settings.py); a bad value stops the command
with a message naming the variable or flag.
"""

from __future__ import annotations

import argparse
import sys

from .commands import COMMANDS
from .settings import SettingsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nextwatch",
                                     description="Real-time 'what to watch next' recommendations.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers).set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SettingsError as problem:
        print(f"nextwatch: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
