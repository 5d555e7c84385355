"""The baselines of the quality table, built from training sequences (title codes per user,
oldest first), exactly as ``reference_baselines.py`` defines them:

- popularity: a title's score is its event count over the largest count;
- first-order transitions: the count of a -> b over consecutive events, from the last title;
- decayed transitions: each title's row of counts over the row's total, over the last 5 titles
  weighted 1, 0.6, 0.36, ... (most recent first).

The transition models add popularity x 0.001 to every score to break ties. Unlike the Spark
job (``training/transitions.py``), a -> a steps are counted, as the reference counts them: they
only change the row totals, since a title already watched is never recommended.

A ``Baseline`` scores in float64 with the reference's arithmetic, term by term and in its
order: under the pessimistic tie rule two titles whose exact scores are equal must stay equal,
and the float32 tables of ``NextTitleModel`` would round some such pairs apart (and some close
pairs together). ``Baseline.model()`` gives the servable ``NextTitleModel`` of the same table.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from ..model import NextTitleModel, PositionWeights

__all__ = ["Baseline", "decayed_transition_model", "popularity", "popularity_model", "transition_counts",
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


@dataclasses.dataclass(frozen=True)
class Baseline:
    """score(t) = popularity_weight * popularity[t] + sum over the last ``window`` titles h_i
    (most recent first, i = 0, 1, ...) of decay^i * counts[h_i -> t] / totals[h_i]."""

    popularity: np.ndarray  # float64, per title
    offsets: np.ndarray  # CSR rows of the table, one per title
    codes: np.ndarray  # next title codes, ascending within a row
    counts: np.ndarray  # float64, per table entry
    totals: np.ndarray  # float64, per title: what its row's counts are divided by
    window: int
    decay: float
    popularity_weight: float
    params: dict

    @property
    def title_count(self) -> int:
        return len(self.popularity)

    def dense_scores(self, history: np.ndarray) -> np.ndarray:
        """Scores for every title: the reference's sums, in its order (popularity first, then
        each recent title's row, the weight multiplied down by ``decay`` one step at a time)."""
        scores = self.popularity * self.popularity_weight
        weight = 1.0
        for title in np.asarray(history, dtype=np.int64)[::-1][: self.window]:
            row = slice(self.offsets[title], self.offsets[title + 1])
            scores[self.codes[row]] += weight * self.counts[row] / self.totals[title]  # codes unique in a row
            weight *= self.decay
        return scores

    def model(self) -> NextTitleModel:
        """The same table as a ``NextTitleModel`` (float32 arrays, as served)."""
        rows = np.repeat(np.arange(self.title_count), np.diff(self.offsets))
        return NextTitleModel(self.popularity, self.offsets, self.codes, self.counts / self.totals[rows],
                              weights=PositionWeights(self.window, self.decay),
                              popularity_weight=self.popularity_weight, params=self.params)


def popularity_model(histories: Sequence[np.ndarray], n_items: int) -> Baseline:
    empty = np.zeros(n_items + 1, dtype=np.int64)
    return Baseline(popularity(histories, n_items), empty, np.empty(0, np.int32), np.empty(0), np.ones(n_items),
                    window=1, decay=1.0, popularity_weight=1.0, params={"model": "popularity"})


def transition_model(histories: Sequence[np.ndarray], n_items: int, top_n: int | None = None) -> Baseline:
    """First-order transitions: raw counts from the last title only (window 1)."""
    table = transition_counts(histories, n_items)
    if top_n is not None:
        table = truncate_rows(*table, top_n)
    return Baseline(popularity(histories, n_items), *table, np.ones(n_items), window=1, decay=1.0,
                    popularity_weight=TIE_BREAK, params={"model": "transitions", "top_n": top_n})


def decayed_transition_model(histories: Sequence[np.ndarray], n_items: int, window: int = 5, decay: float = 0.6,
                             top_n: int | None = None) -> Baseline:
    """Transitions as P(b | a) (counts over the row's total before any cut), over the last
    ``window`` titles weighted ``decay ** i``."""
    offsets, codes, counts = transition_counts(histories, n_items)
    rows = np.repeat(np.arange(n_items), np.diff(offsets))
    # A title with no transition has an empty row: its total is never used, 1 keeps it finite.
    totals = np.maximum(np.bincount(rows, weights=counts, minlength=n_items), 1.0)
    table = (offsets, codes, counts)
    if top_n is not None:
        table = truncate_rows(*table, top_n)
    return Baseline(popularity(histories, n_items), *table, totals, window=window, decay=decay,
                    popularity_weight=TIE_BREAK,
                    params={"model": "decayed-transitions", "window": window, "decay": decay, "top_n": top_n})


def _concatenated(histories: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All histories in one array, and the user (index into ``histories``) of each entry."""
    lengths = [len(h) for h in histories]
    if not sum(lengths):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(histories).astype(np.int64), np.repeat(np.arange(len(histories)), lengths)
