"""`nextwatch evaluate` end to end on a small demo data set, and the Spark fit of the default
model on a tiny example whose table is computed by hand."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from nextwatch.datasets.demo_dataset import DemoConfig, write_demo_dataset
from nextwatch.datasets.readers import read_events
from nextwatch.evaluation import decayed_transition_model, evaluate_scorer, leave_last_out, popularity_model
from nextwatch.training.fit import GRID, FitParams, fit_next_title

METRICS = ("hr@10", "ndcg@10", "mrr@10", "coverage@10")

# Codes A=0, B=1, C=2. u1: A B C; u2: A C; u3: B A.
TINY = [("u1", 0, 1.0), ("u1", 1, 2.0), ("u1", 2, 3.0), ("u2", 0, 1.0), ("u2", 2, 2.0), ("u3", 1, 1.0),
        ("u3", 0, 2.0)]  # fmt: skip


def rows_of(model) -> dict[int, list[tuple[int, float]]]:
    table = {}
    for code in range(model.title_count):
        start, end = model.neighbour_offsets[code], model.neighbour_offsets[code + 1]
        table[code] = list(zip(model.neighbour_codes[start:end].tolist(), model.neighbour_scores[start:end].tolist()))
    return table


def test_spark_fit_matches_a_hand_computed_table(spark):
    events = spark.createDataFrame(TINY, "user_id string, code int, timestamp double")
    params = FitParams(gamma=0.5, back=0.5, eta=1.0, top_n=2)
    model, report = fit_next_title(spark, events, 3, params=params)

    # Lead pairs: A->B (d1), A->C (d2), B->C (d1) by u1; A->C (d1) by u2; B->A (d1) by u3.
    # F: AB 1, AC 1 + 0.5 = 1.5, BC 1, BA 1. C = F + 0.5 F^T:
    # AB 1.5, AC 1.5, BA 1.5, BC 1, CA 0.75, CB 0.5; row sums A 3, B 2.5, C 1.25.
    # Users: A 3, B 2, C 2; both: AB 2, AC 2, BC 1 -> cos AB = AC = 2/sqrt(6), BC = 1/2.
    ab = 1.5 / math.sqrt(3) + 2 / math.sqrt(6)
    ba, bc = 1.5 / math.sqrt(2.5) + 2 / math.sqrt(6), 1 / math.sqrt(2.5) + 0.5
    ca, cb = 0.75 / math.sqrt(1.25) + 2 / math.sqrt(6), 0.5 / math.sqrt(1.25) + 0.5
    expected = {0: [(1, ab), (2, ab)], 1: [(0, ba), (2, bc)], 2: [(0, ca), (1, cb)]}  # A's tie: lower code first
    assert {code: [(t, pytest.approx(s, rel=1e-6)) for t, s in row] for code, row in expected.items()} == rows_of(model)
    np.testing.assert_allclose(model.popularity, [1.0, 2 / 3, 2 / 3])
    assert model.weights.window == 10 and model.weights.decay == 0.6 and model.popularity_weight == 1e-3
    assert model.params["gamma"] == 0.5 and report.holdout is None and report.events == 7

    # Cut to one per source, not renormalised; no cosine and no back direction: plain F / sqrt(row sum).
    # B's row: BA 1, BC 1 tie -> A. C has no forward transition: no row.
    cut, _ = fit_next_title(spark, events, 3, params=FitParams(gamma=0.5, back=0.0, eta=0.0, top_n=1))
    assert rows_of(cut) == {0: [(2, pytest.approx(1.5 / math.sqrt(2.5)))], 1: [(0, pytest.approx(1 / math.sqrt(2)))],
                            2: []}
    # Only one step ahead: u1's A -> C (two steps) is not counted, so AB 1, AC 1.
    short, _ = fit_next_title(spark, events, 3, params=FitParams(gamma=0.5, back=0.0, eta=0.0, max_lead=1))
    assert rows_of(short)[0] == [(1, pytest.approx(1 / math.sqrt(2))), (2, pytest.approx(1 / math.sqrt(2)))]
    # Each user cut to their last distinct title: no co-watch pair is left, so eta changes nothing.
    capped, _ = fit_next_title(spark, events, 3, params=FitParams(gamma=0.5, back=0.0, eta=1.0, max_user_titles=1))
    plain, _ = fit_next_title(spark, events, 3, params=FitParams(gamma=0.5, back=0.0, eta=0.0))
    assert rows_of(capped) == rows_of(plain)


def test_tuning_on_given_targets_picks_the_best_grid_point(spark):
    events = spark.createDataFrame(TINY, "user_id string, code int, timestamp double")
    histories, targets = [np.array([0]), np.array([1])], np.array([2, 2])
    model, report = fit_next_title(spark, events, 3, tune_on=(histories, targets))

    assert len(report.grid) == len(GRID) == 12
    best = max(report.grid, key=lambda point: point["ndcg@10"])
    assert report.holdout["ndcg@10"] == best["ndcg@10"]
    assert model.params["gamma"] == report.params.gamma


@pytest.fixture(scope="module")
def demo_events(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return str(write_demo_dataset(out, DemoConfig(titles=120, viewers=250, seed=3, mean_watches=20)).events_path)


def test_evaluate_command_prints_the_model_next_to_the_baselines(demo_events):
    done = subprocess.run([sys.executable, "-m", "nextwatch.cli", "evaluate", demo_events, "--format", "parquet",
                           "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)

    split = leave_last_out(read_events(demo_events, "parquet").events)
    assert (result["users"], result["items"]) == (len(split.users), split.n_items)
    for name, build in (("popularity", popularity_model), ("decayed_transitions", decayed_transition_model)):
        model = build(split.test_histories, split.n_items)
        direct = evaluate_scorer(model.dense_scores, split.test_histories, split.test_targets, split.n_items)
        assert result[name] == {m: pytest.approx(direct[m], abs=1e-12) for m in METRICS}
    assert set(result["model"]) == set(METRICS)
    assert result["model"]["ndcg@10"] > result["popularity"]["ndcg@10"]
    assert result["ties"] == "pessimistic"
    (run,) = result["seeds"]["runs"]  # one seed: its figures are the model's, with no standard error
    assert run["seed"] == 0 and {m: run[m] for m in METRICS} == result["model"]
    assert result["seeds"]["standard_error"] == {"hr@10": None, "ndcg@10": None}
    assert {"gamma", "back", "eta", "window", "decay"} <= set(result["parameters"])
    assert len(result["validation"]["grid"]) == 12
    chosen = result["validation"]["chosen"]
    assert chosen["ndcg@10"] == max(point["ndcg@10"] for point in result["validation"]["grid"])


def test_evaluate_trains_the_sequence_model_over_seeds_within_its_time_box(demo_events):
    """--seeds 2: each seed's network trained and tuned in its own time box, the table's grid
    scored once, and the mean and standard error of the seeds' figures in the JSON and table."""
    import os

    from nextwatch.commands.evaluate import table
    from nextwatch.training.fit import SEQUENCE_WEIGHTS

    env = {**os.environ, "NEXTWATCH_SEQUENCE_MODEL": "auto", "NEXTWATCH_TRAIN_MINUTES": "3"}
    done = subprocess.run([sys.executable, "-m", "nextwatch.cli", "evaluate", demo_events, "--format", "parquet",
                           "--seeds", "2", "--json"], capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    tuned = result["validation"]["sequence"]  # the first seed's
    weights = {point["weight"]: point["ndcg@10"] for point in tuned["weights"]}
    assert sorted(weights) == sorted(SEQUENCE_WEIGHTS)
    # λ 0 is the table alone (standardising keeps its order, up to rounding in near-ties).
    assert weights[0.0] == pytest.approx(result["validation"]["chosen"]["ndcg@10"], abs=2e-3)
    best = max(weights.values())
    assert result["parameters"]["sequence_weight"] == min(w for w, v in weights.items() if v == best)
    assert len(tuned["holdout_ndcg_by_epoch"]) == tuned["epochs"] >= tuned["best_epoch"] >= 1
    if result["parameters"]["sequence_weight"] > 0:
        assert result["parameters"]["sequence_epochs"] == tuned["best_epoch"]
    assert "sequence model epoch 1: loss" in done.stderr  # progress on stderr, the JSON alone on stdout

    assert result["ties"] == "pessimistic"
    seeds = result["seeds"]
    runs = seeds["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    assert runs[0]["validation_sequence"] == tuned
    # The table's grid is scored once; each seed tunes only its network, on the chosen point.
    assert len(result["validation"]["grid"]) == 12 and [r["grid_points"] for r in runs] == [1, 1]
    assert sorted(point["weight"] for point in runs[1]["validation_sequence"]["weights"]) == sorted(SEQUENCE_WEIGHTS)
    for name in ("hr@10", "ndcg@10"):
        a, b = runs[0][name], runs[1][name]
        assert seeds["mean"][name] == pytest.approx((a + b) / 2, abs=1e-12)
        assert seeds["standard_error"][name] == pytest.approx(abs(a - b) / 2, abs=1e-12)  # std / sqrt(2), N=2
    assert result["model"] == {m: pytest.approx((runs[0][m] + runs[1][m]) / 2, abs=1e-12) for m in METRICS}
    # The baselines are deterministic: computed once, the same as without seeds.
    split = leave_last_out(read_events(demo_events, "parquet").events)
    direct = evaluate_scorer(popularity_model(split.test_histories, split.n_items).dense_scores,
                             split.test_histories, split.test_targets, split.n_items)
    assert result["popularity"] == {m: pytest.approx(direct[m], abs=1e-12) for m in METRICS}

    printed = table(result)
    for run in runs:
        assert f"seed {run['seed']}: hr@10 {run['hr@10']:.4f} ndcg@10 {run['ndcg@10']:.4f}" in printed
    mean, error = seeds["mean"], seeds["standard_error"]
    assert (f"model over 2 seeds (mean ± standard error): hr@10 {mean['hr@10']:.4f} ± {error['hr@10']:.4f}, "
            f"ndcg@10 {mean['ndcg@10']:.4f} ± {error['ndcg@10']:.4f}") in printed
    assert "model (mean, 2 seeds)" in printed and "ties: pessimistic" in printed
    # The demo's catalog is far below losses.SAMPLED_FROM_TITLES: auto trained with the full softmax, and says so.
    assert (tuned["loss"], tuned["setting"]) == ("full", "auto") and ", full softmax)" in printed


def test_evaluate_with_rules_shows_what_a_blocklist_costs(demo_events, tmp_path):
    """--rules: the model scored again with the rules applied as serving applies them. Blocking
    the most common test target makes every user who watched it next a miss."""
    import collections
    import os

    split = leave_last_out(read_events(demo_events, "parquet").events)
    target, count = collections.Counter(split.test_targets.tolist()).most_common(1)[0]
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps({"blocklist": [str(split.items[target])],
                                      "boosts": [{"content_id": str(split.items[0]), "weight": 0.5}]}))
    env = {**os.environ, "NEXTWATCH_SEQUENCE_MODEL": "off"}
    done = subprocess.run([sys.executable, "-m", "nextwatch.cli", "evaluate", demo_events, "--format", "parquet",
                           "--rules", str(rules_file), "--json"], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    ruled = result["rules"]["model_with_rules"]
    assert result["rules"]["file"]["blocklist"] == [str(split.items[target])]
    assert result["rules"]["ndcg@10_cost"] == pytest.approx(result["model"]["ndcg@10"] - ruled["ndcg@10"])
    assert result["rules"]["ndcg@10_cost"] > 0 and ruled["hr@10"] < result["model"]["hr@10"]
    # At most the users whose target is not blocked can still hit.
    assert ruled["hr@10"] <= (len(split.users) - count) / len(split.users)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"boosts": {"C1": 1}}))
    refused = subprocess.run([sys.executable, "-m", "nextwatch.cli", "evaluate", demo_events, "--format", "parquet",
                              "--rules", str(bad)], capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode == 2 and "boosts" in refused.stderr
