"""`nextwatch evaluate` with the sequence network's options changed, to compare variants on the
validation targets before any becomes a default.

    .venv/bin/python research/sequence-options/evaluate_variant.py dropout=0.5 -- \
        evaluate ../shared/data/amazon-beauty/Beauty.txt --format sequences --json

Each NAME=VALUE before ``--`` replaces a field of ``training.sequence_training.SequenceOptions``
(dim, blocks, heads, dropout, learning_rate, batch_size, ...); what follows ``--`` is the
command line of ``nextwatch``. Decide on the JSON's ``seeds.runs[].validation_sequence``: the
network's holdout curve and the blend's NDCG@10 for every λ, all on validation targets; the test
figure is for the report, not for choosing.
"""

from __future__ import annotations

import dataclasses
import sys

from nextwatch.cli import main as nextwatch_main
from nextwatch.training import sequence_training


def parse_changes(items: list[str]) -> dict:
    defaults = sequence_training.SequenceOptions()
    changes = {}
    for item in items:
        name, _, value = item.partition("=")
        if not hasattr(defaults, name) or not value:
            raise SystemExit(f"not a SequenceOptions field=value: {item!r}")
        changes[name] = type(getattr(defaults, name))(value)
    return changes


def main(argv: list[str]) -> int:
    if "--" not in argv:
        raise SystemExit(__doc__)
    split = argv.index("--")
    changes = parse_changes(argv[:split])
    product_options = sequence_training.options_from

    def options_with_changes(settings):
        options = product_options(settings)
        return None if options is None else dataclasses.replace(options, **changes)

    # Read by `evaluate` and `train` when they run.
    sequence_training.options_from = options_with_changes
    print(f"sequence options changed: {changes}", file=sys.stderr)
    return nextwatch_main(argv[split + 1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
