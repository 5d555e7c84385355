"""Does the fast blended scorer rank exactly as the scorer it replaced? On a real trained model.

    .venv/bin/python bench/scoring_equality.py DATASET --format FMT --model FILE.npz

The model is trained the way ``nextwatch evaluate`` trains its tested model (leave-last-out
split, parameters and the sequence model's weight tuned on validation, the final fit on
everything before the test targets; ``NEXTWATCH_SEQUENCE_MODEL`` and ``NEXTWATCH_TRAIN_MINUTES``
apply) and saved to FILE.npz, its published payload; a later run with the same FILE reuses it.
``--weight W``: when validation chose no sequence model (λ 0), train it anyway, for the
validation's best epoch, and blend it at W, so that there is a blend to compare. With
``--epochs N`` as well, the network is not tuned on validation at all (only the table is): it
trains N epochs on everything before the test targets and is blended at W, which bounds the
time the large data sets take on a busy machine.

Every test user is then scored by the scorer of commit ``scorer_before.BEFORE`` (read from
git, ``scorer_before.py``) and by this tree's: HR@10, NDCG@10, MRR@10 and coverage@10 of ``dense_scores`` through
``evaluate_scorer`` (as ``nextwatch evaluate``), each user's top 10 from ``recommend``, and the
target's rank in ``dense_scores``. Then the per-user CPU time of ``recommend`` of both on this
model, on histories cut to what serving keeps. Exit status 1 when a figure differs at 4 decimals.
"""

from __future__ import annotations

import nextwatch  # noqa: F401  first: it sets one BLAS thread before NumPy loads

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time

import numpy as np

from nextwatch.model import NextTitleModel
from scorer_before import BEFORE, model_class

log = logging.getLogger("scoring_equality")
METRICS = ("hr@10", "ndcg@10", "mrr@10", "coverage@10")
SERVED_HISTORY = 50  # titles a user's history keeps in serving (NEXTWATCH_HISTORY_LENGTH's default)


def train(path: str, fmt: str, spark_master: str, weight: float | None = None, epochs: int | None = None):
    """The tested model of ``nextwatch evaluate`` (its flow, step by step) and the split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nextwatch.commands.evaluate import _write_histories
    from nextwatch.datasets.readers import read_events
    from nextwatch.evaluation import leave_last_out
    from nextwatch.settings import load_settings
    from nextwatch.training.fit import fit_next_title
    from nextwatch.training.sequence_training import options_from
    from nextwatch.training.spark import spark_session

    settings = load_settings()
    sequence = options_from(settings)
    deadline = time.monotonic() + settings.train_minutes * 60
    split = leave_last_out(read_events(path, fmt).events)
    spark = spark_session(spark_master, app_name="scoring-equality", **{"spark.driver.memory": "4g"})
    try:
        with tempfile.TemporaryDirectory(prefix="scoring-equality-") as scratch:
            validation = spark.read.parquet(_write_histories(split.validation_histories,
                                                             os.path.join(scratch, "v.parquet"), pa, pq, np))
            test = spark.read.parquet(_write_histories(split.test_histories, os.path.join(scratch, "t.parquet"),
                                                       pa, pq, np))
            _, tuning = fit_next_title(spark, validation, split.n_items,
                                       tune_on=(split.validation_histories, split.validation_targets),
                                       sequence=None if epochs else sequence, deadline=deadline)
            params = tuning.params
            if epochs:
                log.warning("the network is not tuned: %s epochs, blended at %s, as --epochs asks", epochs, weight)
                params = dataclasses.replace(params, sequence_weight=weight, sequence_epochs=epochs)
            elif weight is not None and params.sequence_weight == 0 and tuning.sequence and "best_epoch" in tuning.sequence:
                log.warning("validation chose no sequence model: blending it at %s for %s epochs, as --weight asks",
                            weight, tuning.sequence["best_epoch"])
                params = dataclasses.replace(params, sequence_weight=weight, sequence_epochs=tuning.sequence["best_epoch"])
            model, _ = fit_next_title(spark, test, split.n_items, params=params, sequence=sequence, deadline=deadline)
    finally:
        spark.stop()
    return model


def save(model: NextTitleModel, path: str) -> None:
    arrays, meta = model.to_payload()
    np.savez(path, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
             **{f"array:{name}": np.frombuffer(data, dtype=np.uint8) for name, data in arrays.items()})


def load(path: str, model_class):
    saved = np.load(path)
    arrays = {name[len("array:"):]: saved[name].tobytes() for name in saved.files if name.startswith("array:")}
    return model_class.from_payload(arrays, json.loads(saved["meta"].tobytes()))


def target_ranks(model, histories, targets) -> np.ndarray:
    """Titles outside the history scoring strictly above the target, per user."""
    ranks = np.empty(len(targets), dtype=np.int64)
    for user, (history, target) in enumerate(zip(histories, targets)):
        scores = np.asarray(model.dense_scores(history), dtype=np.float64)
        scores[np.asarray(history, dtype=np.int64)] = -np.inf
        ranks[user] = int((scores > scores[target]).sum())
    return ranks


def flip_gap(old, new, history, target) -> float:
    """The largest distance, before, between the target's score and that of a title that is
    above it in one scorer and not in the other, over the spread of the user's scores."""
    before, after = _masked(old.dense_scores(history), history), _masked(new.dense_scores(history), history)
    flipped = np.flatnonzero((before > before[target]) != (after > after[target]))
    return float(np.abs(before[flipped] - before[target]).max() / before[np.isfinite(before)].std())


def per_user_us(model, histories, rounds: int = 3) -> float:
    """CPU microseconds per ``recommend(history, 10)``, the best of ``rounds`` passes."""
    best = np.inf
    for _ in range(rounds):
        started = time.process_time()
        for history in histories:
            model.recommend(history, 10)
        best = min(best, time.process_time() - started)
    return best / len(histories) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--format", required=True, dest="fmt")
    parser.add_argument("--model", required=True, help="the trained model's payload (.npz); trained if missing")
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--weight", type=float, help="λ to blend at if validation chooses no sequence model")
    parser.add_argument("--epochs", type=int, help="with --weight: train the network this many epochs, untuned")
    args = parser.parse_args(argv)

    from nextwatch.datasets.readers import read_events
    from nextwatch.evaluation import evaluate_scorer, leave_last_out

    if not os.path.exists(args.model):
        started = time.monotonic()
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")  # progress on stderr
        if args.epochs and args.weight is None:
            parser.error("--epochs needs --weight")
        save(train(args.dataset, args.fmt, args.spark_master, args.weight, args.epochs), args.model)
        print(f"trained and saved {args.model} in {time.monotonic() - started:.0f} s", flush=True)
    split = leave_last_out(read_events(args.dataset, args.fmt).events)
    new, old = load(args.model, NextTitleModel), load(args.model, model_class(BEFORE))
    histories, targets = split.test_histories, split.test_targets
    print(f"{args.dataset}: {len(targets)} test users, {split.n_items} titles; sequence weight "
          f"{new.sequence_weight:g} ({'with' if new.has_sequence else 'WITHOUT'} the sequence model)")

    figures = {name: evaluate_scorer(model.dense_scores, histories, targets, split.n_items)
               for name, model in (("before", old), ("after", new))}
    same = True
    for metric in METRICS:
        before, after = figures["before"][metric], figures["after"][metric]
        equal = f"{before:.4f}" == f"{after:.4f}"
        same &= equal
        print(f"  {metric:12} before {before:.6f}  after {after:.6f}  difference {after - before:+.2e}"
              f"  {'same at 4 decimals' if equal else 'DIFFERENT at 4 decimals'}")

    top_before = [old.recommend(h, 10) for h in histories]
    top_after = [new.recommend(h, 10) for h in histories]
    lists = sum(a != b for a, b in zip(top_before, top_after))
    sets = sum(set(a) != set(b) for a, b in zip(top_before, top_after))
    print(f"  recommend top-10: {lists} of {len(histories)} users with a different list ({sets} a different set)")
    ranks_before, ranks_after = target_ranks(old, histories, targets), target_ranks(new, histories, targets)
    moved = np.flatnonzero(ranks_before != ranks_after)
    print(f"  target's rank in dense_scores: {len(moved)} users differ"
          + "".join(f"; user {u}: {ranks_before[u]} -> {ranks_after[u]}" for u in moved[:5]))
    if len(moved):
        gaps = [flip_gap(old, new, histories[u], targets[u]) for u in moved]
        print(f"    the titles that changed sides of the target were within {max(gaps):.1e} of it "
              f"(before, in units of the user's score spread): float32 rounding")
    dense_vs_recommend = sum(list(np.lexsort((np.arange(split.n_items), -_masked(new.dense_scores(h), h)))[:10])
                             != top for h, top in zip(histories, top_after))
    print(f"  after: dense_scores' top 10 (equal scores to the lower code) against recommend: "
          f"{dense_vs_recommend} users differ")

    sample = [h[-SERVED_HISTORY:] for h in histories[:: max(1, len(histories) // 300)]]
    for _ in range(2):  # interleaved: each figure is the best of its rounds
        before_us, after_us = per_user_us(old, sample), per_user_us(new, sample)
    print(f"  recommend(history, 10) on the last {SERVED_HISTORY} titles of {len(sample)} test users, CPU time: "
          f"before {before_us:.0f} us a user, after {after_us:.0f} us ({before_us / after_us:.1f}x)")
    return 0 if same and lists == 0 else 1


def _masked(scores: np.ndarray, history) -> np.ndarray:
    scores = np.array(scores, dtype=np.float64)
    scores[np.asarray(history, dtype=np.int64)] = -np.inf
    return scores


if __name__ == "__main__":
    sys.exit(main())
