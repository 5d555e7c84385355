"""What one user's top 10 costs with the sequence model blended in (what POST /watched computes
inline), next to the table alone and to the blended scorer of an earlier commit.

    .venv/bin/python bench/sequence_cost.py [--titles 12101] [--history 10 50] [--rounds 7] [--steps]

The model is the shipped shape (64-dim, 2 blocks, 50 positions, one head) with random weights,
over a table of 100 neighbours per title read through a window of 10: the cost does not depend
on what the weights learned. The scorer of ``--before`` (default ``scorer_before.BEFORE``) is
read from git and loads the same model. The variants run in interleaved rounds, each round in
the other order than the last; a figure is the best round's mean per call, in microseconds of
this process's CPU time (one BLAS thread, as the package sets): on a shared machine, time spent
waiting for a core is not the scorer's cost (``--clock wall`` counts it). ``--steps`` adds what
each step of either blended scorer costs on its own (warm caches: the steps add up to less than
the whole).
"""

from __future__ import annotations

import nextwatch  # noqa: F401  first: it sets one BLAS thread before NumPy loads

import argparse
import sys
import time
import timeit

import numpy as np

from nextwatch.model import NextTitleModel, PositionWeights
from nextwatch.model import kernels
from nextwatch.model.sequence import SequenceModel
from scorer_before import BEFORE, model_class

TARGET_US = 150.0
WHOLE = "all"  # a step named so is the others together: left out of their sum


def build(titles: int, neighbours: int, seed: int = 0) -> NextTitleModel:
    rng = np.random.default_rng(seed)
    offsets = np.arange(titles + 1, dtype=np.int64) * neighbours
    codes = rng.integers(0, titles, titles * neighbours).astype(np.int32)
    scores = rng.random(titles * neighbours).astype(np.float32)
    return NextTitleModel(rng.random(titles), offsets, codes, scores, weights=PositionWeights(10, 0.6),
                          sequence=SequenceModel.random(titles, dim=64, blocks=2, max_length=50, seed=seed),
                          sequence_weight=16.0)


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def interleaved_us(calls: dict, rounds: int, number: int, clock: str) -> dict[str, float]:
    """Best mean microseconds per call of each of ``calls``, timed in alternating order."""
    best = {name: np.inf for name in calls}
    names = list(calls)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            seconds = timeit.Timer(calls[name], timer=CLOCKS[clock]).timeit(number)
            best[name] = min(best[name], seconds / number * 1e6)
    return best


def step_calls(model: NextTitleModel, history: np.ndarray) -> dict:
    """Each step of this tree's blended scorer (``model/kernels.py``) on its own, on ``history``."""
    blend, sequence = model._blend, model.sequence
    watched = np.unique(history[(history >= 0) & (history < model.title_count)])
    state = sequence.state(history)
    table = model.position_weights, model.neighbour_offsets, model.neighbour_codes, model.neighbour_scores
    learned, reached, at_reached, _, _ = blend._parts(history)
    return {
        "table: neighbour sums, reached titles": lambda: kernels.table_sparse(
            history, *table, blend.popular_part, blend.table_centre, watched),
        "network (one history)": lambda: sequence.state(history),
        "catalog: items @ (c * state)": lambda: kernels._catalog_product(sequence.items, state),
        "top 10 of learned + table": lambda: kernels.top_blended(learned, blend.popular_centred, reached,
                                                                 at_reached, watched, 10),
        WHOLE + " but the top 10 (one call)": lambda: blend._parts(history),
    }


def steps_before(before, history: np.ndarray) -> dict:
    """Each step of the earlier scorer (``next_title.py`` at ``--before``) on its own."""
    module = sys.modules[type(before).__module__]
    table, learned = before.table_scores(history), before.sequence.scores(history)
    unwatched = module.unwatched_mask(history, before.title_count)
    dense = before.dense_scores(history)
    state = before.sequence.last_states([history])
    return {
        "table scores over the catalog": lambda: before.table_scores(history),
        "network (a padded batch of one)": lambda: before.sequence.last_states([history]),
        "catalog: state @ items.T": lambda: state @ before.sequence.items.T,
        "unwatched mask, two standardisations": lambda: module.blend(
            table, learned, module.unwatched_mask(history, before.title_count), before.sequence_weight),
        "top 10 (argpartition)": lambda: before._top_blended(history, dense.copy(), 10),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--titles", type=int, default=12_101, help="catalog size (Amazon Beauty's by default)")
    parser.add_argument("--neighbours", type=int, default=100)
    parser.add_argument("--history", type=int, nargs="+", default=[10, 50], help="titles per history")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=100, help="calls per variant and round")
    parser.add_argument("--before", default=BEFORE, help="the commit whose scorer is compared (git)")
    parser.add_argument("--steps", action="store_true", help="also time each step of both blended scorers")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: this process's CPU time (default); wall: elapsed time")
    args = parser.parse_args(argv)
    model = build(args.titles, args.neighbours)
    before = model_class(args.before).from_payload(*model.to_payload())
    rng = np.random.default_rng(1)
    print(f"{args.titles:,} titles, {args.neighbours} neighbours per title; microseconds per user, best of "
          f"{args.rounds} interleaved rounds of {args.number} calls ({args.clock} time); target for the blend: <= {TARGET_US:.0f}")
    met = True
    for length in args.history:
        history = rng.integers(0, args.titles, length)
        assert model.recommend(history, 10) == before.recommend(history, 10), "the two scorers disagree"
        us = interleaved_us({"table": lambda: model.recommend(history, 10, with_sequence=False),
                             "blend": lambda: model.recommend(history, 10),
                             "before": lambda: before.recommend(history, 10)}, args.rounds, args.number, args.clock)
        verdict = "met" if us["blend"] <= TARGET_US else "NOT met"
        met &= us["blend"] <= TARGET_US
        print(f"history {length:>3}: table alone {us['table']:6.0f}   blend {us['blend']:6.0f} ({verdict})   "
              f"blend at {args.before} {us['before']:6.0f}   ({us['before'] / us['blend']:.1f}x)", flush=True)
        if args.steps:
            for label, calls in (("this tree", step_calls(model, history)),
                                 (args.before, steps_before(before, history))):
                steps = interleaved_us(calls, args.rounds, args.number, args.clock)
                print(f"  steps, {label}:")
                for name, value in steps.items():
                    print(f"    {name:40} {value:6.1f}")
                parts = sum(value for name, value in steps.items() if not name.startswith(WHOLE))
                print(f"    {'sum of the steps':40} {parts:6.1f}", flush=True)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
