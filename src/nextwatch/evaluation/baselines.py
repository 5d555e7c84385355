"""The baselines of the quality table, built as ``NextTitleModel`` objects from training
sequences (title codes per user, oldest first), exactly as ``reference_baselines.py`` defines
them:

- popularity: a title's score is its event count over the largest count;
- first-order transitions: the count of a -> b over consecutive events, from the last title;
- decayed transitions: each title's row of counts normalised to sum 1, over the last 5 titles
  weighted 1, 0.6, 0.36, ... (most recent first).

The transition models add popularity x 0.001 to every score to break ties. Unlike the Spark
job (``training/transitions.py``), a -> a steps are counted, as the reference counts them: they
only change the row totals, since a title already watched is never recommended.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..model import NextTitleModel, PositionWeights

__all__ = ["decayed_transition_model", "popularity", "popularity_model", "transition_counts",
           "transition_model", "truncate_rows"]

TIE_BREAK = 1e-3  # weight of normalised popularity in the transition models


def popularity(histories: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """Events per title, over the largest count (so the most popular title scores 1)."""
    counts = np.bincount(_concatenated(histories)[0], minlength=n_items).astype(np.float64)
    return counts / max(counts.max(initial=0.0), 1.0)


def transition_counts(histories: Sequence[np.ndarray], n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of a -> b over each user's consecutive titles as CSR rows: (offsets,
    next codes in ascending order within a row, counts)."""
    codes, user = _concatenated(histories)
    same_user = user[1:] == user[:-1]
    pairs = codes[:-1][same_user].astype(np.int64) * n_items + codes[1:][same_user]
    keys, counts = np.unique(pairs, return_counts=True)
    sources = keys // n_items
    offsets = np.r_[0, np.cumsum(np.bincount(sources, minlength=n_items))].astype(np.int64)
    return offsets, (keys % n_items).astype(np.int32), counts.astype(np.float64)


def truncate_rows(offsets: np.ndarray, codes: np.ndarray, scores: np.ndarray,
                  top_n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the ``top_n`` highest scores of every row (equal scores: the lower code), as the
    served table does; rows stay sorted by code."""
    rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    order = np.lexsort((codes, -scores, rows))
    keep = np.zeros(len(codes), dtype=bool)
    keep[order[np.arange(len(order)) - offsets[rows[order]] < top_n]] = True
    counts = np.bincount(rows[keep], minlength=len(offsets) - 1)
    return np.r_[0, np.cumsum(counts)].astype(np.int64), codes[keep], scores[keep]


def popularity_model(histories: Sequence[np.ndarray], n_items: int) -> NextTitleModel:
    empty = np.zeros(n_items + 1, dtype=np.int64)
    return NextTitleModel(popularity(histories, n_items), empty, np.empty(0, np.int32), np.empty(0, np.float32),
                          weights=PositionWeights(1, 1.0), popularity_weight=1.0,
                          params={"model": "popularity"})


def transition_model(histories: Sequence[np.ndarray], n_items: int, top_n: int | None = None) -> NextTitleModel:
    """First-order transitions: raw counts from the last title only (window 1)."""
    table = transition_counts(histories, n_items)
    if top_n is not None:
        table = truncate_rows(*table, top_n)
    return NextTitleModel(popularity(histories, n_items), *table, weights=PositionWeights(1, 1.0),
                          popularity_weight=TIE_BREAK, params={"model": "transitions", "top_n": top_n})


def decayed_transition_model(histories: Sequence[np.ndarray], n_items: int, window: int = 5, decay: float = 0.6,
                             top_n: int | None = None) -> NextTitleModel:
    """Transitions as P(b | a) (each row sums to 1 before any cut), over the last ``window``
    titles weighted ``decay ** i``."""
    offsets, codes, counts = transition_counts(histories, n_items)
    rows = np.repeat(np.arange(n_items), np.diff(offsets))
    table = (offsets, codes, counts / np.bincount(rows, weights=counts, minlength=n_items)[rows])
    if top_n is not None:
        table = truncate_rows(*table, top_n)
    return NextTitleModel(popularity(histories, n_items), *table, weights=PositionWeights(window, decay),
                          popularity_weight=TIE_BREAK,
                          params={"model": "decayed-transitions", "window": window, "decay": decay, "top_n": top_n})


def _concatenated(histories: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All histories in one array, and the user (index into ``histories``) of each entry."""
    lengths = [len(h) for h in histories]
    if not sum(lengths):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(histories).astype(np.int64), np.repeat(np.arange(len(histories)), lengths)
