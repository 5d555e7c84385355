"""Where the sampled loss starts to pay: seconds per training batch of the sequence network with
the full softmax and with the sampled one, on synthetic catalogs of growing size.

    .venv/bin/python bench/sequence_loss.py [--titles 2000 5000 10000 20000 50000 100000 200000]
        [--negatives 3000] [--batches 3] [--rounds 3] [--history 51] [--ratio 1.5] [--threads 0]

Each catalog gets ``--batches`` batches of random histories (uniform titles; lengths uniform from 2
to ``--history`` titles, the training's 50 positions at most): timing does not depend on what
the histories mean. Each loss trains its own network (the shipped shape: 64-dim, 2 blocks,
batches of 128, Adam) through the training's own epoch loop (``sequence._train_epoch``), one
warm-up batch first; then the two run in interleaved rounds, each round in the other order than
the last, and a figure is the best round's wall seconds per batch (training uses every core, so
CPU time would add the threads up). The criterion: the smallest catalog where a batch with the
full loss costs at least ``--ratio`` times one with the sampled loss, and the crossing
interpolated between the two measured sizes around it (linear in log titles). That is what
``losses.SAMPLED_FROM_TITLES`` is set from.

Memory: the full loss holds positions x titles floats (about 2.6 GB at 200,000 titles with the
default histories).
"""

from __future__ import annotations

import nextwatch  # noqa: F401  first: it sets one BLAS thread before NumPy loads

import argparse
import dataclasses
import math
import os
import time

import numpy as np

from nextwatch.training import sequence_training as trainer
from nextwatch.training.losses import FULL, SAMPLED, SAMPLED_FROM_TITLES, batch_loss
from nextwatch.training.network import torch_network


def histories(titles: int, count: int, longest: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, titles, int(rng.integers(2, longest + 1))) for _ in range(count)]


def seconds_per_batch(titles: int, options: trainer.SequenceOptions, batches: int, rounds: int,
                      longest: int) -> dict[str, float]:
    import torch

    torch.set_num_threads(trainer.training_threads(options))
    sequences = histories(titles, batches * options.batch_size, longest, seed=titles)
    warm_up = sequences[: options.batch_size]
    runs = {}
    for kind in (FULL, SAMPLED):
        torch.manual_seed(options.seed)
        network = torch_network(titles, options)
        optimiser = torch.optim.Adam(network.parameters(), lr=options.learning_rate)
        loss_of = batch_loss(kind, titles, options.negatives, options.seed)
        trainer._train_epoch(network, optimiser, loss_of, warm_up, np.random.default_rng(0), options, torch, None)
        runs[kind] = (network, optimiser, loss_of)
    best = {kind: math.inf for kind in runs}
    for round_index in range(rounds):
        for kind in (FULL, SAMPLED) if round_index % 2 == 0 else (SAMPLED, FULL):
            network, optimiser, loss_of = runs[kind]
            began = time.perf_counter()
            trainer._train_epoch(network, optimiser, loss_of, sequences, np.random.default_rng(round_index), options,
                                 torch, None)
            best[kind] = min(best[kind], (time.perf_counter() - began) / batches)
    return best


def crossing(sizes: list[int], ratios: list[float], target: float) -> tuple[int | None, float | None]:
    """The first measured size whose ratio reaches ``target``, and the size where the ratio
    crosses it, linear in log titles between that size and the one before."""
    for index, (size, ratio) in enumerate(zip(sizes, ratios)):
        if ratio >= target:
            if index == 0 or ratios[index - 1] >= ratio:
                return size, None
            low, high = sizes[index - 1], size
            share = (target - ratios[index - 1]) / (ratio - ratios[index - 1])
            return size, math.exp(math.log(low) + share * (math.log(high) - math.log(low)))
    return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--titles", type=int, nargs="+", default=[2000, 5000, 10000, 20000, 50000, 100000, 200000])
    parser.add_argument("--negatives", type=int, default=trainer.SequenceOptions.negatives)
    parser.add_argument("--batches", type=int, default=3, help="batches per round and loss")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--history", type=int, default=51, help="the longest random history, in titles")
    parser.add_argument("--ratio", type=float, default=1.5, help="full / sampled seconds that make sampling worth it")
    parser.add_argument("--threads", type=int, default=0, help="PyTorch threads (0: every core, as training)")
    args = parser.parse_args()
    options = dataclasses.replace(trainer.SequenceOptions(), negatives=args.negatives, threads=args.threads)
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"{trainer.training_threads(options)} threads; {args.negatives} negatives; "
          f"{args.batches} batches x {args.rounds} rounds; histories of 2-{args.history} titles")
    print(f"{'titles':>8} {'full s/batch':>13} {'sampled s/batch':>16} {'full/sampled':>13}")
    sizes = sorted(args.titles)
    ratios = []
    for titles in sizes:
        best = seconds_per_batch(titles, options, args.batches, args.rounds, args.history)
        ratios.append(best[FULL] / best[SAMPLED])
        print(f"{titles:>8} {best[FULL]:>13.3f} {best[SAMPLED]:>16.3f} {ratios[-1]:>13.2f}", flush=True)
    first, interpolated = crossing(sizes, ratios, args.ratio)
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if first is None:
        print(f"the full loss never cost {args.ratio}x the sampled one up to {sizes[-1]} titles")
    else:
        at = f", crossing at about {interpolated:,.0f} titles (interpolated)" if interpolated else ""
        print(f"full >= {args.ratio}x sampled from {first:,} titles measured{at}; "
              f"losses.SAMPLED_FROM_TITLES is {SAMPLED_FROM_TITLES:,}")


if __name__ == "__main__":
    main()
