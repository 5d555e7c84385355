"""What the sequence model costs to score, per user: inline (a cache miss) and in the refiner's
batches, next to the table alone (what POST /watched computes).

    .venv/bin/python bench/sequence_cost.py [--titles 12101] [--history 10] [--batch 1 50 500]

The model is the shipped shape (64-dim, 2 blocks, 50 positions) with random weights, over a
table of 100 neighbours per title: the cost does not depend on what the weights learned. Each
figure is the best of 3 timed repeats, in microseconds per user, in this process alone.
"""

from __future__ import annotations

import argparse
import sys
import timeit

import numpy as np

from nextwatch.model import NextTitleModel, PositionWeights
from nextwatch.model.sequence import SequenceModel


def build(titles: int, neighbours: int, seed: int = 0) -> NextTitleModel:
    rng = np.random.default_rng(seed)
    offsets = np.arange(titles + 1, dtype=np.int64) * neighbours
    codes = rng.integers(0, titles, titles * neighbours).astype(np.int32)
    scores = rng.random(titles * neighbours).astype(np.float32)
    return NextTitleModel(rng.random(titles), offsets, codes, scores, weights=PositionWeights(10, 0.6),
                          sequence=SequenceModel.random(titles, dim=64, blocks=2, max_length=50, seed=seed),
                          sequence_weight=16.0)


def best_us(call, users: int, number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=3)) / number / users * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--titles", type=int, default=12_101, help="catalog size (Amazon Beauty's by default)")
    parser.add_argument("--neighbours", type=int, default=100)
    parser.add_argument("--history", type=int, nargs="+", default=[10, 50], help="titles per history")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 50, 500], help="users per refiner batch")
    args = parser.parse_args(argv)
    model = build(args.titles, args.neighbours)
    rng = np.random.default_rng(1)
    print(f"{args.titles:,} titles, {args.neighbours} neighbours per title; microseconds per user")
    for length in args.history:
        one = rng.integers(0, args.titles, length)
        table = best_us(lambda: model.recommend(one, 10, with_sequence=False), 1, 200)
        inline = best_us(lambda: model.recommend(one, 10), 1, 50)
        line = f"history {length:>3}: table alone {table:7.0f}   blend inline {inline:7.0f}"
        for size in args.batch:
            histories = [rng.integers(0, args.titles, length) for _ in range(size)]
            line += f"   batch of {size}: {best_us(lambda: model.recommend_many(histories, 10), size, 3):6.0f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
