"""Seconds per epoch of the sequence network's training, and the epochs the holdout chooses, on a
data set split as ``nextwatch evaluate`` splits it (the network trains on the validation
histories and stops on the validation targets), without Spark or the table.

    .venv/bin/python bench/sequence_epochs.py FILE --format FMT [--max-epochs N] [--threads N]
        [--loss auto|full|sampled] [--negatives K]

Prints one JSON object: epochs, best epoch, stopped_by, seconds per epoch (training alone and
the holdout measurement alone) and the holdout curve.
"""

from __future__ import annotations

import nextwatch  # noqa: F401  first: it sets one BLAS thread before NumPy loads

import argparse
import dataclasses
import json
import logging
import time

from nextwatch.datasets.readers import EVENT_FORMATS, read_events
from nextwatch.evaluation import leave_last_out
from nextwatch.settings import SEQUENCE_LOSSES
from nextwatch.training import sequence_training as trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--format", required=True, choices=EVENT_FORMATS, dest="fmt")
    parser.add_argument("--max-epochs", type=int, default=trainer.SequenceOptions.max_epochs)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loss", choices=SEQUENCE_LOSSES, default=trainer.SequenceOptions.loss)
    parser.add_argument("--negatives", type=int, default=trainer.SequenceOptions.negatives)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    split = leave_last_out(read_events(args.dataset, args.fmt).events)
    options = dataclasses.replace(trainer.SequenceOptions(), max_epochs=args.max_epochs, threads=args.threads,
                                  seed=args.seed, loss=args.loss, negatives=args.negatives)
    timings = {"train": 0.0, "holdout": 0.0}
    measure = trainer._sample_ndcg

    def timed_measure(*a, **k):  # the holdout measurement's share of an epoch
        began = time.perf_counter()
        try:
            return measure(*a, **k)
        finally:
            timings["holdout"] += time.perf_counter() - began

    trainer._sample_ndcg = timed_measure
    began = time.perf_counter()
    _, report = trainer.train_sequence_model(split.validation_histories, split.n_items, options,
                                             holdout=(split.validation_histories, split.validation_targets))
    total = time.perf_counter() - began
    print(json.dumps({"dataset": args.dataset, "users": len(split.users), "items": split.n_items,
                      **report.loss, "epochs": report.epochs, "best_epoch": report.best_epoch,
                      "stopped_by": report.stopped_by,
                      "seconds": round(total, 1),
                      "train_seconds_per_epoch": round((total - timings["holdout"]) / max(report.epochs, 1), 2),
                      "holdout_seconds_per_epoch": round(timings["holdout"] / max(report.epochs, 1), 2),
                      "holdout_ndcg": [round(v, 4) for v in report.holdout_ndcg]}))


if __name__ == "__main__":
    main()
