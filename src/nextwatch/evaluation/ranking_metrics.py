"""Ranking metrics over the full catalog, as the protocol (``protocol.py``) defines them.

A user's rank of the target is the number of other titles, outside the user's history, that
score at least as high as it (``ties="pessimistic"``, the default): the target ranks after
every title with an equal score, so a model gains nothing from scoring many titles alike. The
rule of many published scripts, ``ties="optimistic"``, counts only the titles strictly above
it; it is kept to compare with figures measured that way. A target the user has already
watched is a miss. From the ranks:
HR@k (target in the top k), NDCG@k (1 / log2(rank + 2) when in the top k), MRR@k
(1 / (rank + 1) when in the top k); and catalog coverage@k, the share of all titles that
appear in at least one user's top k (equal scores go to the lower code, as ``recommend``).

Users are scored in blocks of dense rows, so 22k users by 12k titles takes seconds.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

__all__ = ["TIES", "evaluate_scorer", "rank_block", "summarise"]

TIES = ("pessimistic", "optimistic")  # where the target ranks among titles with its score

PROBE_COLUMNS_PER_K = 16  # see _in_top_k
MISS = np.iinfo(np.int64).max  # the rank of a target the user has already watched


def rank_block(scores: np.ndarray, histories: Sequence[np.ndarray], targets: np.ndarray,
               k: int = 10, ties: str = "pessimistic") -> tuple[np.ndarray, np.ndarray]:
    """For a block of users (``scores``: one row of scores over all titles per user), each
    target's rank under the ``ties`` rule (module docstring) and, per title, whether it is in
    some user's top ``k``."""
    _check_ties(ties)
    scores = np.array(scores, dtype=np.float64)  # a copy: history titles are masked in it
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    watched = np.zeros(scores.shape, dtype=bool)
    if len(rows):
        columns = np.concatenate(histories).astype(np.int64)
        watched[rows, columns] = True
        scores[rows, columns] = -np.inf
    users = np.arange(len(targets))
    target_scores = scores[users, targets][:, None]
    if ties == "pessimistic":  # the target's own score is among those >= it: not counted
        ranks = ((scores >= target_scores) & ~watched).sum(axis=1).astype(np.int64) - 1
    else:
        ranks = (scores > target_scores).sum(axis=1).astype(np.int64)
    ranks[watched[users, targets]] = MISS
    return ranks, _in_top_k(scores, ~watched, k)


def summarise(ranks: np.ndarray, shown: np.ndarray, k: int = 10) -> dict:
    """The metrics of all users from their ranks and the titles shown to anyone."""
    hit = ranks < k
    gain = np.zeros(len(ranks))
    gain[hit] = 1.0 / np.log2(ranks[hit] + 2.0)
    reciprocal = np.zeros(len(ranks))
    reciprocal[hit] = 1.0 / (ranks[hit] + 1.0)
    count = max(len(ranks), 1)
    return {"users": len(ranks), f"hr@{k}": hit.sum() / count, f"ndcg@{k}": gain.sum() / count,
            f"mrr@{k}": reciprocal.sum() / count, f"coverage@{k}": shown.mean() if len(shown) else 0.0}


def evaluate_scorer(score_fn: Callable[[np.ndarray], np.ndarray], histories: Sequence[np.ndarray],
                    targets: np.ndarray, n_items: int, k: int = 10, block_size: int = 128,
                    ties: str = "pessimistic") -> dict:
    """Metrics of ``score_fn`` (history codes -> scores over all ``n_items`` titles, as
    ``NextTitleModel.dense_scores``) on each user's ``targets``, ranked under ``ties``."""
    _check_ties(ties)
    if len(histories) != len(targets):
        raise ValueError(f"histories and targets must have one entry per user: {len(histories)} != {len(targets)}")
    targets = np.asarray(targets, dtype=np.int64)
    ranks = np.empty(len(targets), dtype=np.int64)
    shown = np.zeros(n_items, dtype=bool)
    for start in range(0, len(targets), block_size):
        block = slice(start, start + block_size)
        scores = np.stack([np.asarray(score_fn(h), dtype=np.float64) for h in histories[block]])
        if scores.shape[1] != n_items:
            raise ValueError(f"score_fn must return {n_items} scores, got {scores.shape[1]}")
        ranks[block], block_shown = rank_block(scores, histories[block], targets[block], k, ties)
        shown |= block_shown
    return summarise(ranks, shown, k)


def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")


def _in_top_k(scores: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """Per title, whether it is among the ``k`` best allowed titles of some row; equal scores
    go to the lower code.

    A full partition of every row is the slow part of evaluation, so each row's k-th best is
    first bounded from below by the k-th best within a few columns that score high across the
    block; usually only a few dozen titles reach that bound, and those are sorted exactly.
    Rows where many titles reach it (ties, masked probes) take the full partition.
    """
    shown = np.zeros(scores.shape[1], dtype=bool)
    k = min(k, scores.shape[1])
    if scores.size == 0 or k == 0:
        return shown
    probe_size = PROBE_COLUMNS_PER_K * k
    if scores.shape[1] <= probe_size:
        return _in_top_k_exact(scores, allowed, k)
    column_weight = np.where(allowed, scores, 0.0).sum(axis=0)
    probe = np.argpartition(column_weight, len(column_weight) - probe_size)[-probe_size:]
    floor = np.partition(scores[:, probe], probe_size - k, axis=1)[:, probe_size - k]
    candidate = (scores >= floor[:, None]) & allowed
    few = candidate.sum(axis=1) <= probe_size
    rows, columns = np.nonzero(candidate[few])
    values = scores[few][rows, columns]
    order = np.lexsort((columns, -values, rows))
    starts = np.r_[0, np.cumsum(np.bincount(rows, minlength=few.sum()))]
    place = np.arange(len(order)) - starts[rows[order]]
    shown[columns[order][place < k]] = True
    if not few.all():
        shown |= _in_top_k_exact(scores[~few], allowed[~few], k)
    return shown


def _in_top_k_exact(scores: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    kth = np.partition(scores, scores.shape[1] - k, axis=1)[:, -k][:, None]
    above = (scores > kth) & allowed
    tied = (scores == kth) & allowed
    room = k - above.sum(axis=1, keepdims=True)
    return (above | (tied & (np.cumsum(tied, axis=1) <= room))).any(axis=0)
