"""The seed-to-seed spread of the sequence network's best holdout NDCG@10 on a demo data set, as
`nextwatch train` holds it out (each viewer's last title, viewers with at least 3): what a
different engine may differ by (tests/test_cluster_training.py's tolerance comes from it).

    .venv/bin/python bench/sequence_spread.py [--viewers 400] [--titles 300] [--mean-watches 15] [--seeds 10]

Trains in this process (one process, every core), one seed after another; prints each seed's
epochs and best figure, then the mean, the standard deviation and the range.
"""

from __future__ import annotations

import nextwatch  # noqa: F401  first: it sets one BLAS thread before NumPy loads

import argparse
import time

import numpy as np

from nextwatch.datasets.demo_dataset import DemoConfig
from nextwatch.datasets.demo_catalog import generate_catalog
from nextwatch.datasets.demo_viewers import simulate_viewers
from nextwatch.training.sequence_training import SequenceOptions, train_sequence_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=400)
    parser.add_argument("--titles", type=int, default=300)
    parser.add_argument("--mean-watches", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    config = DemoConfig(titles=args.titles, viewers=args.viewers, mean_watches=args.mean_watches)
    viewers, titles, _ = simulate_viewers(config, generate_catalog(config))
    order = np.argsort(viewers, kind="stable")
    viewers, titles = viewers[order], titles[order].astype(np.int64)
    bounds = np.flatnonzero(np.r_[True, viewers[1:] != viewers[:-1], True])
    histories = [titles[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    held = [h for h in histories if len(h) >= 3]
    trained_on = [h[:-1] if len(h) >= 3 else h for h in histories]
    holdout = ([h[:-1] for h in held], np.array([h[-1] for h in held]))
    print(f"{len(histories)} viewers, {sum(map(len, histories))} events, {len(held)} held out", flush=True)
    best = []
    for seed in range(args.seeds):
        started = time.monotonic()
        _, report = train_sequence_model(trained_on, args.titles, SequenceOptions(seed=seed), holdout=holdout)
        best.append(max(report.holdout_ndcg))
        print(f"seed {seed}: {report.epochs} epochs, best {report.best_epoch}, NDCG@10 {best[-1]:.4f}, "
              f"{time.monotonic() - started:.0f} s", flush=True)
    print(f"mean {np.mean(best):.4f}, standard deviation {np.std(best, ddof=1):.4f}, "
          f"from {min(best):.4f} to {max(best):.4f}")


if __name__ == "__main__":
    main()
