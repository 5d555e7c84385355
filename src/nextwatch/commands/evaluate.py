"""nextwatch evaluate: the offline quality of the Spark-trained model on a data set, next to the
baselines, with exactly the protocol of ``evaluation/protocol.py``.

The split leaves each user's last event out for the test and the one before it for validation.
The model's parameters are tuned on the validation targets, with models built (by the same Spark
fit as production) from the events before them; the tested model is built from everything
before the test targets with the chosen parameters. Every model is scored over the full catalog
with ``NextTitleModel.dense_scores``, the scorer serving uses.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import tempfile
import time

from ..datasets.readers import EVENT_FORMATS

METRICS = ("hr@10", "ndcg@10", "mrr@10", "coverage@10")


def add_parser(subparsers):
    parser = subparsers.add_parser("evaluate", help="evaluate the model on a data set against the baselines",
                                   description="Leave-last-out evaluation of the Spark-trained model, tuned on "
                                               "validation, next to the popularity and decayed-transitions "
                                               "baselines.")
    parser.add_argument("dataset", help="the data set file")
    parser.add_argument("--format", required=True, choices=EVENT_FORMATS, dest="fmt", help="the file's format")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--spark-master", default="local[2]", help="Spark master URL (default local[2])")
    parser.add_argument("--sequence-seed", type=int, default=0,
                        help="seed of the sequence model's initial weights and batches (default 0): "
                             "run a few to see how much its figures move with chance")
    return parser


def run(args) -> int:
    if not os.path.exists(args.dataset):
        print(f"nextwatch evaluate: {args.dataset} does not exist", file=sys.stderr)
        return 2
    # Progress (stage times, the sequence model's epochs) on stderr; the result on stdout.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result = evaluate(args.dataset, args.fmt, args.spark_master, sequence_seed=args.sequence_seed)
    print(json.dumps(result, sort_keys=True) if args.json else table(result), flush=True)
    return 0


def evaluate(path: str, fmt: str, spark_master: str = "local[2]", sequence_seed: int = 0) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..datasets.readers import read_events
    from ..evaluation import decayed_transition_model, evaluate_scorer, leave_last_out, popularity_model
    from ..settings import load_settings
    from ..training.fit import fit_next_title
    from ..training.sequence import options_from as sequence_options
    from ..training.spark import spark_session

    settings = load_settings()
    sequence = sequence_options(settings)
    if sequence is not None:
        sequence = dataclasses.replace(sequence, seed=sequence_seed)
    started = time.monotonic()
    deadline = started + settings.train_minutes * 60  # the trainer's time box, for the whole evaluation
    split = leave_last_out(read_events(path, fmt).events)
    n_items = split.n_items
    timing = {"split_seconds": time.monotonic() - started}

    def scored(model, histories, targets) -> dict:
        metrics = evaluate_scorer(model.dense_scores, histories, targets, n_items)
        return {name: float(metrics[name]) for name in METRICS}

    baselines_started = time.monotonic()
    results = {
        "popularity": scored(popularity_model(split.test_histories, n_items), split.test_histories, split.test_targets),
        "decayed_transitions": scored(decayed_transition_model(split.test_histories, n_items),
                                      split.test_histories, split.test_targets),
    }
    timing["baselines_seconds"] = time.monotonic() - baselines_started

    spark = spark_session(spark_master, app_name="nextwatch-evaluate", **{"spark.driver.memory": "4g"})
    try:
        with tempfile.TemporaryDirectory(prefix="nextwatch-evaluate-") as scratch:
            validation_events = spark.read.parquet(_write_histories(split.validation_histories,
                                                                    os.path.join(scratch, "validation.parquet"),
                                                                    pa, pq, np))
            test_events = spark.read.parquet(_write_histories(split.test_histories,
                                                              os.path.join(scratch, "test.parquet"), pa, pq, np))
            tuning_started = time.monotonic()
            _, tuning = fit_next_title(spark, validation_events, n_items,
                                       tune_on=(split.validation_histories, split.validation_targets),
                                       sequence=sequence, deadline=deadline)
            timing["tuning_seconds"] = time.monotonic() - tuning_started
            final_started = time.monotonic()
            model, _ = fit_next_title(spark, test_events, n_items, params=tuning.params, sequence=sequence,
                                      deadline=deadline, warm_start=tuning.sequence_network)
            timing["final_fit_seconds"] = time.monotonic() - final_started
    finally:
        spark.stop()
    scoring_started = time.monotonic()
    results["model"] = scored(model, split.test_histories, split.test_targets)
    timing["model_scoring_seconds"] = time.monotonic() - scoring_started
    timing["total_seconds"] = time.monotonic() - started
    params = tuning.params
    return {
        "dataset": path,
        "format": fmt,
        "users": len(split.users),
        "items": n_items,
        "events": split.events,
        **results,
        "parameters": {"model": params.model, "gamma": params.gamma, "back": params.back, "eta": params.eta,
                       "max_lead": params.max_lead, "max_user_titles": params.max_user_titles,
                       "top_n": params.top_n, "window": params.window, "decay": params.decay,
                       "popularity_weight": params.popularity_weight, "sequence_weight": model.sequence_weight,  # 0 if the time box ran out before the final training
                       "sequence_epochs": params.sequence_epochs if model.has_sequence else 0},
        "validation": {"chosen": tuning.holdout, "grid": tuning.grid, "sequence": tuning.sequence},
        "timing": {name: round(value, 2) for name, value in timing.items()},
    }


def _write_histories(histories, path, pa, pq, np) -> str:
    """The training histories as events for Spark: user index, title code, and the position
    in the history as the timestamp (so Spark keeps the protocol's order)."""
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    codes = np.concatenate(histories).astype(np.int32) if lengths.sum() else np.empty(0, np.int32)
    users = np.repeat(np.arange(len(histories)), lengths)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    positions = np.arange(len(codes)) - np.repeat(starts, lengths)
    table = pa.table({"user_id": pa.array(users.astype(str)), "code": pa.array(codes),
                      "timestamp": pa.array(positions.astype(np.float64))})
    pq.write_table(table, path)
    return path


def _sequence_line(result: dict) -> str:
    tuned = result["validation"].get("sequence")
    if tuned is None:
        return "sequence model: not trained (NEXTWATCH_SEQUENCE_MODEL=off, or PyTorch not installed)"
    if "skipped" in tuned:
        return f"sequence model: not trained, {tuned['skipped']} (NEXTWATCH_TRAIN_MINUTES)"
    p = result["parameters"]
    by_weight = " ".join(f"{w['weight']:g}:{w['ndcg@10']:.4f}" for w in tuned["weights"])
    return (f"sequence model: weight {p['sequence_weight']:g}, {p['sequence_epochs']} epochs (best of "
            f"{tuned['epochs']} on validation, stopped by {tuned['stopped_by']}); validation ndcg@10 by weight: "
            f"{by_weight}")


def table(result: dict) -> str:
    rows = [("model (Spark, tuned)", result["model"]), ("decayed transitions", result["decayed_transitions"]),
            ("popularity", result["popularity"])]
    lines = [f"{result['dataset']} ({result['format']}): {result['users']} users, {result['items']} items, "
             f"{result['events']} events", "",
             f"{'':22}" + "".join(f"{name:>13}" for name in METRICS)]
    for name, metrics in rows:
        lines.append(f"{name:22}" + "".join(f"{metrics[m]:>13.4f}" for m in METRICS))
    p = result["parameters"]
    chosen = result["validation"]["chosen"] or {}
    lines += ["", f"chosen on validation: gamma={p['gamma']} back={p['back']} eta={p['eta']} "
                  f"(validation hr@10={chosen.get('hr@10', float('nan')):.4f} "
                  f"ndcg@10={chosen.get('ndcg@10', float('nan')):.4f}); window={p['window']} decay={p['decay']} "
                  f"top_n={p['top_n']} popularity_weight={p['popularity_weight']}",
              _sequence_line(result),
              "timing: " + ", ".join(f"{k.replace('_seconds', '')} {v:.1f} s" for k, v in result["timing"].items())]
    return "\n".join(lines)
