"""The evaluation protocol on data with known answers: the one-pass 5-core filter, time order
with ties in file order, hand-computed metrics on a 3-user toy, and the baselines against a
plain transcription of reference_baselines.py under both tie rules (the script itself, on the
shared data sets: test_reference_baselines.py)."""

import collections
import math

import numpy as np
import pytest

from nextwatch.datasets.events import Events
from nextwatch.evaluation import (decayed_transition_model, evaluate_scorer, leave_last_out, popularity_model,
                                  transition_model)
from nextwatch.evaluation.baselines import transition_counts, truncate_rows
from nextwatch.evaluation.ranking_metrics import _in_top_k, _in_top_k_exact
from nextwatch.evaluation.seeds import mean_and_standard_error, seed_summary



def events_of(rows):
    """Events from (user, item, timestamp) rows, in file order."""
    users, items, stamps = zip(*rows)
    return Events.from_columns(list(users), list(items), list(stamps))


def test_five_core_filter_is_one_pass():
    # Items a..e are watched by u1..u5 (5 events each); "rare" has 4 events. u1 has 6 events,
    # of which one is "rare": after the filter u1 keeps 5. u6 has exactly 4 events: dropped.
    rows = [(f"u{u}", item, t) for t, (u, item) in enumerate((u, item) for u in range(1, 6) for item in "abcde")]
    rows += [("u1", "rare", 100), ("u2", "rare", 101), ("u3", "rare", 102), ("u6", "rare", 103)]
    rows += [("u6", "a", 104), ("u6", "b", 105), ("u6", "c", 106)]
    split = leave_last_out(events_of(rows))
    assert split.items.tolist() == ["a", "b", "c", "d", "e"]
    assert split.users.tolist() == ["u1", "u2", "u3", "u4", "u5"]
    # One pass: "a" had 6 events, u6's among them, and stays even though u6 is gone.
    assert split.events == 25


def test_one_pass_can_leave_users_below_the_threshold():
    # u1 has 5 events, 2 of them on items that are dropped: u1 keeps 3 and is still evaluated;
    # u2 keeps 2 of 5 and is not evaluated (too short), but its events count.
    rows = [(f"v{j}", item, j) for j in range(5) for item in "abcde"]
    rows += [("u1", "a", 10), ("u1", "x", 11), ("u1", "b", 12), ("u1", "y", 13), ("u1", "c", 14)]
    rows += [("u2", "a", 20), ("u2", "x", 21), ("u2", "y", 22), ("u2", "z", 23), ("u2", "b", 24)]
    split = leave_last_out(events_of(rows))
    assert "u1" in split.users.tolist() and "u2" not in split.users.tolist()
    assert split.events == 25 + 3 + 2


def test_time_order_with_ties_in_file_order():
    rows = [("u", item, t) for item, t in [("d", 3), ("a", 1), ("c", 2), ("b", 2), ("e", 9), ("f", 2)]]
    split = leave_last_out(events_of(rows), min_count=1)
    codes = {item: code for code, item in enumerate(split.items)}
    order = [codes[x] for x in "acbfde"]  # by time; the three at time 2 in file order
    assert split.test_histories[0].tolist() == order[:-1] and split.test_targets.tolist() == [order[-1]]
    assert split.validation_histories[0].tolist() == order[:-2] and split.validation_targets.tolist() == [order[-2]]


def test_short_users_are_not_evaluated():
    split = leave_last_out(events_of([("a", "x", 1), ("a", "y", 2), ("b", "x", 1), ("b", "y", 2), ("b", "z", 3)]),
                           min_count=1)
    assert split.users.tolist() == ["b"]
    with pytest.raises(ValueError, match="at least 3"):
        leave_last_out(events_of([("a", "x", 1)]), min_user_events=2)


def test_metrics_on_a_three_user_toy():
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    histories = [np.array([5]), np.array([0]), np.array([1, 2])]
    # user 0: target 0 scores highest -> rank 0. user 1: target 3; 0 is watched, so 1 and 2 are
    # above -> rank 2. user 2: target 2 is in the history -> a miss.
    result = evaluate_scorer(lambda h: scores, histories, np.array([0, 3, 2]), n_items=6, k=10)
    assert result["users"] == 3
    assert result["hr@10"] == pytest.approx(2 / 3)
    assert result["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert result["mrr@10"] == pytest.approx((1 + 1 / 3) / 3)
    assert result["coverage@10"] == 1.0  # with k=10, every unwatched title is shown to someone

    small = evaluate_scorer(lambda h: scores, histories, np.array([0, 3, 2]), n_items=6, k=2)
    assert small["hr@2"] == pytest.approx(1 / 3)  # rank 2 is outside the top 2
    assert small["coverage@2"] == pytest.approx(4 / 6)  # {0, 1} / {1, 2} / {0, 3}


def test_the_target_ranks_after_every_title_with_its_score_and_top_k_prefers_lower_codes():
    scores = np.array([1.0, 1.0, 1.0, 0.0, 1.0])
    # Title 2 ties with 0 and 1 (4 is watched): rank 2 pessimistic, 0 optimistic.
    histories, targets = [np.array([4], dtype=np.int32)], np.array([2])
    result = evaluate_scorer(lambda h: scores, histories, targets, n_items=5, k=3)
    assert result["hr@3"] == 1.0 and result["ndcg@3"] == pytest.approx(1 / math.log2(4))
    assert evaluate_scorer(lambda h: scores, histories, targets, n_items=5, k=2)["hr@2"] == 0.0
    optimistic = evaluate_scorer(lambda h: scores, histories, targets, n_items=5, k=1, ties="optimistic")
    assert optimistic["hr@1"] == 1.0 and optimistic["ndcg@1"] == 1.0
    assert optimistic["coverage@1"] == 0.2  # only title 0 is shown
    with pytest.raises(ValueError, match="ties must be one of pessimistic, optimistic"):
        evaluate_scorer(lambda h: scores, histories, targets, n_items=5, ties="random")


def test_scorer_must_score_every_title():
    with pytest.raises(ValueError, match="must return 5 scores"):
        evaluate_scorer(lambda h: np.zeros(4), [np.array([0])], np.array([1]), n_items=5)


def test_fast_top_k_agrees_with_the_exact_one():
    rng = np.random.default_rng(3)
    for ties in (False, True):
        scores = rng.random((64, 900))
        if ties:
            scores = np.round(scores * 20)  # many equal scores at the k-th place
        allowed = rng.random(scores.shape) > 0.3
        scores[~allowed] = -np.inf
        for k in (1, 10, 40):
            np.testing.assert_array_equal(_in_top_k(scores, allowed, k), _in_top_k_exact(scores, allowed, k))


# -- baselines against a transcription of reference_baselines.py ---------------------------------
def reference_figures(rows, pessimistic):
    """reference_baselines.py, line for line, on in-memory (user, item, timestamp) rows."""
    rows = [(u, i, t, n) for n, (u, i, t) in enumerate(rows)]
    uc = collections.Counter(r[0] for r in rows)
    ic = collections.Counter(r[1] for r in rows)
    rows = [r for r in rows if uc[r[0]] >= 5 and ic[r[1]] >= 5]
    seqs = collections.defaultdict(list)
    for u, i, t, n in sorted(rows, key=lambda r: (r[0], r[2], r[3])):
        seqs[u].append(i)
    idx = {it: k for k, it in enumerate(sorted({r[1] for r in rows}))}
    train = {u: [idx[i] for i in s[:-1]] for u, s in seqs.items() if len(s) >= 3}
    test = {u: idx[seqs[u][-1]] for u in train}
    pop = np.zeros(len(idx))
    trans = collections.defaultdict(collections.Counter)
    for s in train.values():
        for a in s:
            pop[a] += 1
        for a, b in zip(s, s[1:]):
            trans[a][b] += 1
    popn = pop / pop.max()

    def metrics(score_fn):
        hr = nd = 0.0
        for u, s in train.items():
            sc = score_fn(s).astype(float)
            sc[s] = -np.inf
            rank = int((sc > sc[test[u]]).sum())
            if pessimistic:
                rank += int((sc == sc[test[u]]).sum()) - 1
            if rank < 10:
                hr, nd = hr + 1, nd + 1 / math.log2(rank + 2)
        return hr / len(train), nd / len(train)

    def markov(s):
        sc = popn * 1e-3
        for b, c in trans[s[-1]].items():
            sc[b] += c
        return sc

    def markov_k(s, k=5, decay=0.6):
        sc, w = popn * 1e-3, 1.0
        for a in reversed(s[-k:]):
            tot = sum(trans[a].values()) or 1
            for b, c in trans[a].items():
                sc[b] += w * c / tot
            w *= decay
        return sc

    return [metrics(lambda s: popn.copy()), metrics(markov), metrics(markov_k)]


def synthetic_rows(seed=0, users=60, items=40):
    """A few hundred events with structure (users walk the catalog in steps), repeats, and ties."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        item = int(rng.integers(items))
        for _ in range(int(rng.integers(3, 12))):
            rows.append((f"u{u}", f"i{item}", int(rng.integers(0, 6))))  # coarse times: many ties
            item = (item + int(rng.choice([1, 1, 2, 5, 0]))) % items
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_baselines_reproduce_the_reference(seed, ties):
    rows = synthetic_rows(seed)
    split = leave_last_out(events_of(rows))
    ours = []
    for build in (popularity_model, transition_model, decayed_transition_model):
        model = build(split.test_histories, split.n_items)
        result = evaluate_scorer(model.dense_scores, split.test_histories, split.test_targets, split.n_items,
                                 ties=ties)
        ours.append((result["hr@10"], result["ndcg@10"]))
    np.testing.assert_allclose(ours, reference_figures(rows, ties == "pessimistic"), atol=1e-12)


def test_transition_counts_and_truncation():
    histories = [np.array([0, 1, 2]), np.array([0, 1]), np.array([0, 2, 2])]
    offsets, codes, counts = transition_counts(histories, 3)
    assert offsets.tolist() == [0, 2, 3, 4]
    assert list(zip(codes.tolist(), counts.tolist())) == [(1, 2.0), (2, 1.0), (2, 1.0), (2, 1.0)]
    offsets, codes, counts = truncate_rows(offsets, codes, counts, top_n=1)
    assert offsets.tolist() == [0, 1, 2, 3] and codes.tolist() == [1, 2, 2]

    decayed = decayed_transition_model(histories, 3)
    assert decayed.model().neighbour_scores.tolist() == pytest.approx([2 / 3, 1 / 3, 1.0, 1.0])  # rows sum to 1
    # The last title's row, then the one before it at weight 0.6, over popularity x 0.001.
    expected = decayed.popularity * 1e-3 + np.array([0.0, 0.6 * 2 / 3, 1.0 + 0.6 * 1 / 3])
    np.testing.assert_allclose(decayed.dense_scores(np.array([0, 1])), expected, rtol=1e-12)


def test_mean_and_standard_error_over_seeds():
    # 0.1, 0.2, 0.3: sample variance 0.01, standard error sqrt(0.01 / 3).
    assert mean_and_standard_error([0.1, 0.2, 0.3]) == (pytest.approx(0.2), pytest.approx(math.sqrt(0.01 / 3)))
    assert mean_and_standard_error([0.25]) == (0.25, None)  # unknown from one seed, not zero
    summary = seed_summary([{"hr@10": 0.1, "ndcg@10": 0.05}, {"hr@10": 0.3, "ndcg@10": 0.05}], ("hr@10", "ndcg@10"))
    assert summary == {"mean": {"hr@10": pytest.approx(0.2), "ndcg@10": pytest.approx(0.05)},
                       "standard_error": {"hr@10": pytest.approx(0.1), "ndcg@10": 0.0}}
