"""nextwatch evaluate: the offline quality of the Spark-trained model on a data set, next to the
baselines, with exactly the protocol of ``evaluation/protocol.py``.

The split leaves each user's last event out for the test and the one before it for validation.
The model's parameters are tuned on the validation targets, with models built (by the same Spark
fit as production) from the events before them; the tested model is built from everything
before the test targets with the chosen parameters. Every model is scored over the full catalog
with ``NextTitleModel.dense_scores``, the scorer serving uses (the baselines with their own float64
scorer, so that they rank exactly as ``reference_baselines.py``). A target ranks after every
title with its score (``--ties pessimistic``, the default; ``evaluation/ranking_metrics.py``).

``--seeds N`` trains the sequence network with seeds 0..N-1 and reports each seed's figures and
their mean and standard error (``evaluation/seeds.py``); the model's row is the mean. The table's
parameters are chosen on validation before the network has any part, so the grid is scored once,
table alone; then each seed tunes only the network and its blend weight λ on the chosen table,
and trains the final model. Each seed gets the whole time box (NEXTWATCH_TRAIN_MINUTES) from its
own start, the grid outside it, so every seed's network has the same time. The baselines are
deterministic: computed once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from typing import Sequence

from ..datasets.readers import EVENT_FORMATS
from ..errors import NextwatchError
from ..evaluation.ranking_metrics import TIES

METRICS = ("hr@10", "ndcg@10", "mrr@10", "coverage@10")
log = logging.getLogger(__name__)


def add_parser(subparsers):
    parser = subparsers.add_parser("evaluate", help="evaluate the model on a data set against the baselines",
                                   description="Leave-last-out evaluation of the Spark-trained model, tuned on "
                                               "validation, next to the popularity and decayed-transitions "
                                               "baselines.")
    parser.add_argument("dataset", help="the data set file")
    parser.add_argument("--format", required=True, choices=EVENT_FORMATS, dest="fmt", help="the file's format")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--spark-master", default="local[2]", help="Spark master URL (default local[2])")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--sequence-seed", type=int, default=0,
                       help="seed of the sequence model's initial weights and batches (default 0)")
    seeds.add_argument("--seeds", type=_positive, metavar="N",
                       help="train the sequence model with seeds 0..N-1 and report each, their mean and "
                            "standard error: how much its figures move with chance")
    parser.add_argument("--ties", choices=TIES, default="pessimistic",
                        help="where a target ranks among titles with its score: after all of them "
                             "(pessimistic, the default) or before (optimistic, as many published scripts)")
    parser.add_argument("--rules", metavar="FILE",
                        help="also score the model with these deployment rules applied (a JSON file as "
                             "`nextwatch rules set` takes: blocklist, boosts; continue_watching needs series "
                             "metadata, which the data sets lack) and report what they cost in NDCG")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run(args) -> int:
    if not os.path.exists(args.dataset):
        print(f"nextwatch evaluate: {args.dataset} does not exist", file=sys.stderr)
        return 2
    # Progress (stage times, the sequence model's epochs) on stderr; the result on stdout.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    seeds = range(args.seeds) if args.seeds else [args.sequence_seed]
    rules = None
    if args.rules:
        try:
            rules = _read_rules(args.rules)
        except (OSError, ValueError, NextwatchError) as problem:
            print(f"nextwatch evaluate: {args.rules}: {getattr(problem, 'detail', problem)}", file=sys.stderr)
            return 2
    result = evaluate(args.dataset, args.fmt, args.spark_master, seeds=seeds, ties=args.ties, rules=rules)
    print(json.dumps(result, sort_keys=True) if args.json else table(result), flush=True)
    return 0


def _read_rules(path: str):
    from ..service.rules import Rules

    with open(path, encoding="utf-8") as f:
        return Rules.parse(json.load(f), version=0)


def _rule_adjustments(rules, items):
    """The rules over the split's title codes, as serving applies them (``service/rules.py``,
    ``model/adjustments.py``): blocked titles not allowed, boosts in spreads of each user's
    scores. Continue watching needs series metadata, which the evaluated files lack."""
    import numpy as np

    from ..model.adjustments import Adjustments

    code_of = {str(content_id): code for code, content_id in enumerate(items)}.get
    allowed = np.ones(len(items), dtype=bool)
    allowed[rules.blocked_codes(code_of)] = False
    boosts = rules.boost_codes(code_of)
    return Adjustments(allowed=allowed, boost_codes=None if boosts is None else boosts[0],
                       boost_weights=None if boosts is None else boosts[1])


def evaluate(path: str, fmt: str, spark_master: str = "local[2]", seeds: Sequence[int] = (0,),
             ties: str = "pessimistic", rules=None) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..datasets.readers import read_events
    from ..evaluation import decayed_transition_model, evaluate_scorer, leave_last_out, popularity_model
    from ..evaluation.seeds import mean_and_standard_error, seed_summary
    from ..settings import load_settings
    from ..training.fit import fit_next_title
    from ..training.sequence_training import options_from as sequence_options
    from ..training.spark import spark_session

    seeds = list(seeds)
    if not seeds:
        raise ValueError("needs at least one seed")
    settings = load_settings()
    sequence = sequence_options(settings)
    if sequence is None:
        seeds = seeds[:1]  # without the network the model is deterministic: one run says it all
    started = time.monotonic()
    time_box = settings.train_minutes * 60  # the trainer's time box, for each seed's run
    split = leave_last_out(read_events(path, fmt).events)
    n_items = split.n_items
    timing = {"split_seconds": time.monotonic() - started}

    def scored(model, histories, targets, adjustments=None) -> dict:
        score = model.dense_scores if adjustments is None else (lambda h: model.dense_scores(h, adjustments))
        metrics = evaluate_scorer(score, histories, targets, n_items, ties=ties)
        return {name: float(metrics[name]) for name in METRICS}

    adjustments = None if rules is None else _rule_adjustments(rules, split.items)

    baselines_started = time.monotonic()
    results = {
        "popularity": scored(popularity_model(split.test_histories, n_items), split.test_histories, split.test_targets),
        "decayed_transitions": scored(decayed_transition_model(split.test_histories, n_items),
                                      split.test_histories, split.test_targets),
    }
    timing["baselines_seconds"] = time.monotonic() - baselines_started

    runs = []
    timing.update(final_fit_seconds=0.0, model_scoring_seconds=0.0)
    spark = spark_session(spark_master, app_name="nextwatch-evaluate", **{"spark.driver.memory": "4g"})
    try:
        with tempfile.TemporaryDirectory(prefix="nextwatch-evaluate-") as scratch:
            validation_events = spark.read.parquet(_write_histories(split.validation_histories,
                                                                    os.path.join(scratch, "validation.parquet"),
                                                                    pa, pq, np))
            test_events = spark.read.parquet(_write_histories(split.test_histories,
                                                              os.path.join(scratch, "test.parquet"), pa, pq, np))
            tune_on = (split.validation_histories, split.validation_targets)
            # The table's grid, once: its choice does not depend on the network or its seed.
            tuning_started = time.monotonic()
            _, table_tuning = fit_next_title(spark, validation_events, n_items, tune_on=tune_on)
            timing["table_tuning_seconds"] = time.monotonic() - tuning_started
            chosen_point = [{name: getattr(table_tuning.params, name) for name in ("gamma", "back", "eta")}]
            timing["sequence_tuning_seconds"] = 0.0
            for seed in seeds:
                run_started = time.monotonic()
                deadline = run_started + time_box
                options = None if sequence is None else dataclasses.replace(sequence, seed=seed)
                tuning = table_tuning
                if options is not None:  # the network and its blend weight, on the chosen table
                    _, tuning = fit_next_title(spark, validation_events, n_items, tune_on=tune_on,
                                               grid=chosen_point, sequence=options, deadline=deadline)
                final_started = time.monotonic()
                timing["sequence_tuning_seconds"] += final_started - run_started
                model, _ = fit_next_title(spark, test_events, n_items, params=tuning.params, sequence=options,
                                          deadline=deadline, warm_start=tuning.sequence_network)
                scoring_started = time.monotonic()
                timing["final_fit_seconds"] += scoring_started - final_started
                figures = scored(model, split.test_histories, split.test_targets)
                if adjustments is not None:
                    ruled = scored(model, split.test_histories, split.test_targets, adjustments)
                    figures.update({f"{name} with rules": ruled[name] for name in METRICS})
                timing["model_scoring_seconds"] += time.monotonic() - scoring_started
                runs.append({"seed": seed, **figures, "sequence_weight": model.sequence_weight,
                             "sequence_epochs": tuning.params.sequence_epochs if model.has_sequence else 0,
                             "grid_points": len(tuning.grid), "validation_sequence": tuning.sequence,
                             "seconds": round(time.monotonic() - run_started, 2)})
                log.info("seed %d: model hr@10 %.4f ndcg@10 %.4f", seed, figures["hr@10"], figures["ndcg@10"])
    finally:
        spark.stop()
    timing["total_seconds"] = time.monotonic() - started
    summary = seed_summary(runs, ("hr@10", "ndcg@10"))
    results["model"] = {name: mean_and_standard_error([r[name] for r in runs])[0] for name in METRICS}
    if rules is not None:
        with_rules = {name: mean_and_standard_error([r[f"{name} with rules"] for r in runs])[0] for name in METRICS}
        results["rules"] = {"file": rules.to_json(), "model_with_rules": with_rules,
                            "ndcg@10_cost": results["model"]["ndcg@10"] - with_rules["ndcg@10"],
                            "not_applied": ["continue_watching (no series metadata in the data set)"]
                            if rules.continue_watching else []}
    params, first_run = table_tuning.params, runs[0]
    return {
        "dataset": path,
        "format": fmt,
        "ties": ties,
        "users": len(split.users),
        "items": n_items,
        "events": split.events,
        **results,
        "seeds": {"runs": runs, **summary,
                  "note": None if sequence is not None else "no sequence network (NEXTWATCH_SEQUENCE_MODEL=off, or "
                                                            "PyTorch not installed): the model is deterministic, "
                                                            "one run"},
        "parameters": {"model": params.model, "gamma": params.gamma, "back": params.back, "eta": params.eta,
                       "max_lead": params.max_lead, "max_user_titles": params.max_user_titles,
                       "top_n": params.top_n, "window": params.window, "decay": params.decay,
                       "popularity_weight": params.popularity_weight,
                       # the first seed's; 0 if the time box ran out before the final training
                       "sequence_weight": first_run["sequence_weight"],
                       "sequence_epochs": first_run["sequence_epochs"]},
        "validation": {"chosen": table_tuning.holdout, "grid": table_tuning.grid,
                       "sequence": first_run["validation_sequence"]},
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
    loss = tuned["loss"] + (f" ({tuned['negatives']} negatives)" if "negatives" in tuned else "")
    return (f"sequence model: weight {p['sequence_weight']:g}, {p['sequence_epochs']} epochs (best of "
            f"{tuned['epochs']} on validation, stopped by {tuned['stopped_by']}, {loss} softmax); validation "
            f"ndcg@10 by weight: {by_weight}")


def _seed_lines(result: dict) -> list[str]:
    """Each seed's figures and their mean and standard error; nothing for a single run."""
    seeds = result["seeds"]
    runs = seeds["runs"]
    if len(runs) < 2:
        return [seeds["note"]] if seeds.get("note") else []
    lines = [f"seed {r['seed']}: hr@10 {r['hr@10']:.4f} ndcg@10 {r['ndcg@10']:.4f} "
             f"(sequence weight {r['sequence_weight']:g}, {r['sequence_epochs']} epochs)" for r in runs]
    mean, error = seeds["mean"], seeds["standard_error"]
    lines.append(f"model over {len(runs)} seeds (mean ± standard error): "
                 f"hr@10 {mean['hr@10']:.4f} ± {error['hr@10']:.4f}, ndcg@10 {mean['ndcg@10']:.4f} ± "
                 f"{error['ndcg@10']:.4f}")
    return lines


def table(result: dict) -> str:
    runs = len(result["seeds"]["runs"])
    model_label = "model (Spark, tuned)" if runs == 1 else f"model (mean, {runs} seeds)"
    rows = [(model_label, result["model"])]
    if "rules" in result:
        rows.append(("  with the rules", result["rules"]["model_with_rules"]))
    rows += [("decayed transitions", result["decayed_transitions"]), ("popularity", result["popularity"])]
    lines = [f"{result['dataset']} ({result['format']}): {result['users']} users, {result['items']} items, "
             f"{result['events']} events", "",
             f"{'':22}" + "".join(f"{name:>13}" for name in METRICS)]
    for name, metrics in rows:
        lines.append(f"{name:22}" + "".join(f"{metrics[m]:>13.4f}" for m in METRICS))
    p = result["parameters"]
    chosen = result["validation"]["chosen"] or {}
    if "rules" in result:
        rules = result["rules"]
        lines += ["", f"rules: {len(rules['file']['blocklist'])} blocked, {len(rules['file']['boosts'])} boosted; "
                      f"they cost {rules['ndcg@10_cost']:.4f} NDCG@10"
                      + "".join(f"; not applied: {what}" for what in rules["not_applied"])]
    lines += ["", f"chosen on validation: gamma={p['gamma']} back={p['back']} eta={p['eta']} "
                  f"(validation hr@10={chosen.get('hr@10', float('nan')):.4f} "
                  f"ndcg@10={chosen.get('ndcg@10', float('nan')):.4f}); window={p['window']} decay={p['decay']} "
                  f"top_n={p['top_n']} popularity_weight={p['popularity_weight']}",
              _sequence_line(result) + (" (first seed)" if runs > 1 else ""),
              *_seed_lines(result),
              f"ties: {result['ties']} (the target ranks {'after' if result['ties'] == 'pessimistic' else 'before'} "
              f"every title with its score)",
              "timing: " + ", ".join(f"{k.replace('_seconds', '')} {v:.1f} s" for k, v in result["timing"].items())]
    return "\n".join(lines)
