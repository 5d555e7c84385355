"""The holdout, not the clock, chooses the sequence network's epochs: two trainings with the same
seed and settings end on the same epoch with the same figures and weights, one on a quiet machine
and one while other processes keep every core busy (training/sequence_training.py)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from nextwatch.datasets.demo_dataset import DemoConfig
from nextwatch.datasets.demo_catalog import generate_catalog
from nextwatch.datasets.demo_viewers import simulate_viewers
from nextwatch.training.sequence_training import SequenceOptions, train_sequence_model

# Small enough for seconds an epoch; patience short, so the holdout ends the run well before max_epochs.
OPTIONS = SequenceOptions(dim=32, blocks=2, heads=2, dropout=0.2, max_length=20, batch_size=64,
                          learning_rate=5e-3, max_epochs=25, patience=2, holdout_sample=400, threads=2, seed=11)
SPIN = "import time\nwhile True:\n    time.monotonic()\n"


def demo_holdout():
    """Demo viewers' histories over the demo catalog, each viewer's last title held out."""
    config = DemoConfig(titles=200, viewers=400, mean_watches=20, seed=3)
    viewers, titles, _ = simulate_viewers(config, generate_catalog(config))  # in time order
    order = np.argsort(viewers, kind="stable")
    viewers, titles = viewers[order], titles[order]
    bounds = np.flatnonzero(np.r_[True, viewers[1:] != viewers[:-1], True])
    histories = [titles[a:b].astype(np.int64) for a, b in zip(bounds[:-1], bounds[1:]) if b - a >= 3]
    return [h[:-1] for h in histories], np.array([h[-1] for h in histories]), config.titles


@pytest.fixture
def busy_cores():
    """Processes spinning on every core (and one more) while the test trains."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range((os.cpu_count() or 1) + 1)]
    time.sleep(0.5)
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def train(histories, targets, titles, cap=None):
    return train_sequence_model(histories, titles, OPTIONS, holdout=(histories, targets), cap=cap)


@pytest.fixture(scope="module")
def quiet_run():
    histories, targets, titles = demo_holdout()
    return train(histories, targets, titles)


def test_a_busy_machine_trains_the_same_epochs_and_weights(quiet_run, busy_cores):
    quiet_model, quiet = quiet_run
    histories, targets, titles = demo_holdout()
    busy_model, busy = train(histories, targets, titles, cap=time.monotonic() + 3600)  # a cap far away changes nothing
    assert quiet.stopped_by == busy.stopped_by == "patience"  # the holdout ended both, not the clock
    assert (busy.epochs, busy.best_epoch) == (quiet.epochs, quiet.best_epoch)
    assert np.round(busy.holdout_ndcg, 4).tolist() == np.round(quiet.holdout_ndcg, 4).tolist()
    assert max(quiet.holdout_ndcg) > 0.05  # it learned something worth choosing an epoch for
    for name, array in quiet_model.arrays.items():
        assert np.array_equal(busy_model.arrays[name], array), name
    assert busy.seconds > 0 and quiet.seconds > 0


def test_another_seed_trains_differently(quiet_run):
    histories, targets, titles = demo_holdout()
    other_model, _ = train_sequence_model(histories, titles, dataclasses.replace(OPTIONS, seed=12),
                                          holdout=(histories, targets))
    assert not np.array_equal(other_model.arrays["items"], quiet_run[0].arrays["items"])
