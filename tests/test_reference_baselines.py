"""Our baselines against the shared reference script, on the three shared data sets.

``reference_baselines.py`` writes the protocol and the baselines out plainly; run with
``--ties pessimistic`` it ranks as ``evaluation/ranking_metrics.py`` does by default, so its printed
HR@10 and NDCG@10 of popularity and first-order transitions must be ours to 4 decimals (and
its decayed transitions, which ``nextwatch evaluate`` reports too). The data sets are not
redistributed with the project: they sit beside the repository, in ../shared, and a missing
file is a failure, not a skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nextwatch.datasets.readers import read_events
from nextwatch.evaluation import (decayed_transition_model, evaluate_scorer, leave_last_out, popularity_model,
                                  transition_model)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "tools" / "reference_baselines.py"
# (file, the reference's format name, ours)
DATA_SETS = {
    "ml-100k": ("data/ml-100k/u.data", "ml100k", "movielens-100k"),
    "ml-latest-small": ("data/ml-latest-small/ratings.csv", "mlcsv", "movielens-csv"),
    "amazon-beauty": ("data/amazon-beauty/Beauty.txt", "sequences", "sequences"),
}
# The reference's line names, and the builders of ours.
BASELINES = {"popularity": popularity_model, "first-order transitions": transition_model,
             "decayed transitions, last 5": decayed_transition_model}
LINE = re.compile(r"^(?P<name>.+?)\s+HR@10 (?P<hr>\d\.\d{4})\s+NDCG@10 (?P<ndcg>\d\.\d{4})$")


@pytest.fixture(scope="module", params=sorted(DATA_SETS))
def figures(request):
    """One data set: what the reference prints (its header line and figures per baseline), and
    the split as our protocol makes it. Each data set is read once per module."""
    relative, reference_format, our_format = DATA_SETS[request.param]
    path = SHARED / relative
    missing = [str(p) for p in (REFERENCE, path) if not p.exists()]
    if missing:
        pytest.fail(f"the shared reference data is missing: {', '.join(missing)}")
    done = subprocess.run([sys.executable, str(REFERENCE), str(path), reference_format, "--ties", "pessimistic"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONHASHSEED": "0"})
    assert done.returncode == 0, done.stderr
    header, *lines = done.stdout.splitlines()
    printed = {m["name"]: (m["hr"], m["ndcg"]) for m in map(LINE.match, lines) if m}
    split = leave_last_out(read_events(path, our_format).events)
    return header, printed, split


def test_the_split_is_the_references(figures):
    header, _, split = figures
    assert header == f"users {len(split.users)} items {split.n_items} events {split.events}"


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_matches_the_reference_to_four_decimals(figures, name):
    _, printed, split = figures
    assert set(printed) == set(BASELINES), f"the reference printed {sorted(printed)}"
    model = BASELINES[name](split.test_histories, split.n_items)
    ours = evaluate_scorer(model.dense_scores, split.test_histories, split.test_targets, split.n_items)
    assert (f"{ours['hr@10']:.4f}", f"{ours['ndcg@10']:.4f}") == printed[name]
