"""The default model's neighbour table: the NumPy kernels and the Spark job around them agree
with a plain-Python reading of the recipe in training/neighbours.py."""

from __future__ import annotations

import math
import random
from collections import defaultdict

import numpy as np
import pytest
from pyspark.sql import functions as F

from nextwatch.training import pair_kernels
from nextwatch.training.neighbours import audiences, pair_sums, ranked_neighbours, user_sequences


def reference_table(histories, gamma, back, eta, max_lead, max_user_titles, top_n):
    """The recipe, one loop at a time: {a: [(b, score), ...]} best first."""
    forward = defaultdict(float)
    for titles in histories:
        for i, a in enumerate(titles):
            for d in range(1, max_lead + 1):
                if i + d < len(titles) and titles[i + d] != a:
                    forward[a, titles[i + d]] += gamma ** (d - 1)
    co, users = defaultdict(int), defaultdict(int)
    for titles in histories:
        recent = []
        for title in reversed(titles):
            if title not in recent:
                recent.append(title)
        recent = recent[:max_user_titles]
        for title in recent:
            users[title] += 1
        for x in recent:
            for y in recent:
                if x != y:
                    co[x, y] += 1
    pairs = set(forward) | {(b, a) for a, b in forward} | set(co)
    combined = {(a, b): forward.get((a, b), 0.0) + back * forward.get((b, a), 0.0) for a, b in pairs}
    totals = defaultdict(float)
    for (a, _), value in combined.items():
        totals[a] += value
    table = defaultdict(list)
    for a, b in pairs:
        scaled = combined[a, b] / math.sqrt(totals[a]) if totals[a] > 0 else 0.0
        cosine = co.get((a, b), 0) / math.sqrt(users[a] * users[b]) if co.get((a, b)) else 0.0
        score = scaled + eta * cosine
        if score > 0:
            table[a].append((b, score))
    return {a: sorted(row, key=lambda item: (-item[1], item[0]))[:top_n] for a, row in table.items()}


def random_histories(seed, users=60, titles=25, longest=30):
    rng = random.Random(seed)
    return [[rng.randrange(titles) for _ in range(rng.randint(1, longest))] for _ in range(users)]


def kernel_table(histories, points, max_lead, max_user_titles, top_n, gammas):
    titles, offsets = pair_kernels.flatten(histories)
    sums = pair_kernels.pair_sums(titles, offsets, gammas, max_lead, max_user_titles, with_cosine=True)
    kept, kept_offsets = pair_kernels.recent_distinct(titles, offsets, max_user_titles)
    audience = np.bincount(kept, minlength=int(titles.max()) + 1)
    found = pair_kernels.top_neighbours(sums.pop("key"), sums, audience, points, top_n)
    return [as_rows(found, i) for i in range(len(points))]


def as_rows(found, point):
    rows = defaultdict(list)
    for p, a, b, score, rank in zip(found["point"], found["a"], found["b"], found["score"], found["rank"]):
        if p == point:
            rows[int(a)].append((int(rank), int(b), float(score)))
    return {a: [(b, score) for _, b, score in sorted(row)] for a, row in rows.items()}


def assert_same_tables(found, expected):
    assert found.keys() == expected.keys()
    for a in expected:
        assert [b for b, _ in found[a]] == [b for b, _ in expected[a]], a
        assert [s for _, s in found[a]] == pytest.approx([s for _, s in expected[a]], rel=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_kernels_follow_the_recipe(seed):
    histories = random_histories(seed)
    points = [(0, 0.0, 0.0), (1, 0.5, 0.3), (0, 0.25, 1.0)]
    gammas = [0.7, 0.85]
    found = kernel_table(histories, points, max_lead=4, max_user_titles=8, top_n=5, gammas=gammas)
    for table, (g, back, eta) in zip(found, points):
        assert_same_tables(table, reference_table(histories, gammas[g], back, eta, 4, 8, 5))


def test_recent_distinct_keeps_the_newest_occurrences_newest_first():
    titles, offsets = pair_kernels.flatten([[1, 2, 1, 3, 2], [], [7], [4, 4, 5, 6]])
    kept, kept_offsets = pair_kernels.recent_distinct(titles, offsets, limit=2)
    users = [kept[kept_offsets[i]:kept_offsets[i + 1]].tolist() for i in range(4)]
    assert users == [[2, 3], [], [7], [6, 5]]


def test_lead_pairs_skip_repeats_and_stop_at_the_user_boundary():
    titles, offsets = pair_kernels.flatten([[1, 1, 2], [3, 4]])
    keys, (weights,) = pair_kernels.lead_pairs(titles, offsets, [0.5], max_lead=2)
    a, b = pair_kernels.split_key(keys)
    assert sorted(zip(a.tolist(), b.tolist(), weights.tolist())) == [(1, 2, 0.5), (1, 2, 1.0), (3, 4, 1.0)]


def test_spark_job_gives_the_kernels_table_across_partitions_and_chunks(spark, monkeypatch):
    # Small chunks, small task limits and several tasks: the sums of one pair come from
    # different tasks, chunks and hand-outs of one task.
    import nextwatch.training.neighbours as neighbours

    monkeypatch.setattr(neighbours, "PAIRS_PER_CHUNK", 50)
    monkeypatch.setattr(neighbours, "PAIRS_PER_TASK", 200)  # tasks hand out partial sums too
    histories = random_histories(11, users=80, titles=30)
    rows = [(f"u{u}", int(title), float(t)) for u, titles in enumerate(histories) for t, title in enumerate(titles)]
    events = spark.createDataFrame(rows, "user_id string, code int, timestamp double").repartition(3)
    sequences = user_sequences(events)
    gammas = [0.7, 0.85]
    points = [(1, 0.25, 0.3), (0, 0.5, 0.0)]
    audience = audiences(sequences, 30, 10)
    ranked = ranked_neighbours(pair_sums(sequences, gammas, 5, 10, True), audience, points, 6).toArrow()
    found = {name: ranked.column(name).to_numpy() for name in ranked.column_names}
    for i, (g, back, eta) in enumerate(points):
        assert_same_tables(as_rows(found, i), reference_table(histories, gammas[g], back, eta, 5, 10, 6))
    assert sequences.select(F.sum(F.size("titles"))).first()[0] == len(rows)


def test_accumulator_hands_out_everything_once_and_bounds_what_it_holds():
    rng = np.random.default_rng(5)
    parts = [{"key": np.unique(rng.integers(0, 300, 80)), } for _ in range(12)]
    for part in parts:
        part["v"] = np.ones(len(part["key"]))
    accumulator = pair_kernels.SumAccumulator(max_rows=100)
    handed = []
    for part in parts:
        accumulator.add(part)
        assert len(accumulator.merged["key"]) < 3 * 100  # never far past the limit
        if accumulator.full:
            handed.append(accumulator.take())
    handed.append(accumulator.take())
    assert accumulator.take() is None
    total = pair_kernels.merge_sums(handed)
    expected = pair_kernels.merge_sums(parts)
    assert np.array_equal(total["key"], expected["key"]) and np.array_equal(total["v"], expected["v"])
    assert len(handed) > 2
