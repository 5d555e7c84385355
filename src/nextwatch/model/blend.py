"""The table blended with the sequence model, ranked cheaply enough for every request.

The blend is z_table + λ·z_sequence, each standardised over the titles the user has not
watched (``next_title.standardised`` writes it plainly). A ranking does not change when a
user's scores are all shifted or all scaled by the same positive amount, so with T the table's
scores, S the sequence model's, and m, σ their means and spreads over the unwatched titles:

    z_T + λ·z_S = (T + c·S - m_T - c·m_S) / σ_T,   c = λ·σ_T / σ_S

ranks every title as ``T + c·S`` does, and that is what ``BlendedScorer.scores`` returns. Only
the two spreads are needed, and neither needs a pass over the catalog:

- T is the popularity term everywhere (precomputed with its moments) except at the titles the
  history reaches through the table, a few hundred: the moments are corrected there and at the
  watched titles;
- S = items · out, so its moments over all titles come from the items' mean and covariance
  (d x d, precomputed) and the network's output alone, less the watched titles' own scores.

Moments are taken about a reference point (the catalog's mean) so that no variance is a small
difference of large sums. A spread of 1e-12 or less counts as 1, as in ``standardised``.
"""

from __future__ import annotations

import numpy as np

from .sequence import SequenceModel

FLAT = 1e-12  # a spread at most this is no spread: the scores are only centred
SAMPLE_PER_RESULT = 64  # titles sampled per wanted result to bound the k-th best score from below


class BlendedScorer:
    """Scores of ``table`` (a ``NextTitleModel``) blended with ``sequence`` at ``weight``."""

    def __init__(self, table, sequence: SequenceModel, weight: float):
        self.table, self.sequence, self.weight = table, sequence, float(weight)
        self.title_count = table.title_count
        # The table's score of a title no neighbour reaches, as ``table_scores`` computes it (float32).
        self.popular_part = table.popularity_weight * table.popularity
        self.popular_part64 = self.popular_part.astype(np.float64)
        self.table_centre = float(self.popular_part64.mean())
        centred = self.popular_part64 - self.table_centre
        self.table_sum, self.table_squares = float(centred.sum()), float(centred @ centred)

    def scores(self, history: np.ndarray) -> np.ndarray:
        """float64 scores of every title, ranked as the blend ranks them (module docstring)."""
        history = np.asarray(history, dtype=np.int64)
        return self._scores(history, np.unique(history[(history >= 0) & (history < self.title_count)]))

    def top(self, history: np.ndarray, k: int) -> list[int]:
        """The ``k`` best titles outside ``history`` by ``scores``; equal scores to the lower code."""
        history = np.asarray(history, dtype=np.int64)
        watched = np.unique(history[(history >= 0) & (history < self.title_count)])
        k = min(k, self.title_count - len(watched))
        if k <= 0:
            return []
        scores = self._scores(history, watched)
        scores[watched] = -np.inf
        return top_codes(scores, k)

    def _scores(self, history: np.ndarray, watched: np.ndarray) -> np.ndarray:
        unwatched = self.title_count - len(watched)
        reached, table_at_reached, table_at_watched = self._table_sparse(history, watched)

        # The table's moments about its centre over the unwatched titles (all titles if none is).
        base = self.popular_part64[reached] - self.table_centre
        ours = table_at_reached - self.table_centre
        total = self.table_sum + float(ours.sum() - base.sum())
        squares = self.table_squares + float(ours @ ours - base @ base)
        if unwatched:
            own = table_at_watched - self.table_centre
            total, squares = total - float(own.sum()), squares - float(own @ own)
        table_spread = _spread(total, squares, unwatched or self.title_count)

        state = self.sequence.state(history)
        total, squares = self.sequence.score_moments(state, watched if unwatched else watched[:0])
        sequence_spread = _spread(total, squares, unwatched or self.title_count)

        # c·S in one product over the catalog: c scales the network's output, not every score.
        learned = self.sequence.items @ (state * np.float32(self.weight * table_spread / sequence_spread))
        blended = learned + self.popular_part64
        blended[reached] = learned[reached] + table_at_reached
        return blended

    def _table_sparse(self, history: np.ndarray, watched: np.ndarray):
        """The titles the table reaches from ``history`` (codes with a non-zero neighbour sum:
        elsewhere the table's score is the popularity term) and the table's scores there and at
        the ``watched`` titles, each float32 as ``table_scores`` computes it, as float64."""
        codes, terms = self.table.neighbour_terms(history)
        summed = np.bincount(codes, weights=terms, minlength=self.title_count)
        reached = np.flatnonzero(summed)
        at_reached = (summed[reached] + self.popular_part[reached]).astype(np.float32)
        at_watched = (summed[watched] + self.popular_part[watched]).astype(np.float32)
        return reached, at_reached.astype(np.float64), at_watched.astype(np.float64)


def top_codes(scores: np.ndarray, k: int) -> list[int]:
    """The codes of the ``k`` highest ``scores``, best first, equal scores to the lower code.

    The k-th best of a strided sample is at most the k-th best of all, so only the titles
    scoring at least that need sorting: one pass over the catalog, no full partition."""
    if k <= 0:
        return []
    stride = max(1, len(scores) // (SAMPLE_PER_RESULT * k))
    sample = scores[::stride]
    floor = np.partition(sample, len(sample) - k)[len(sample) - k] if len(sample) > k else -np.inf
    candidates = np.flatnonzero(scores >= floor)
    values = scores[candidates]
    if len(candidates) > 4 * k:  # a weak floor (many titles watched, or tied): cut to the k-th exactly
        kth = np.partition(values, len(values) - k)[len(values) - k]
        keep = values >= kth
        candidates, values = candidates[keep], values[keep]
    return candidates[np.lexsort((candidates, -values))[:k]].tolist()


def _spread(total: float, squares: float, count: int) -> float:
    """Standard deviation from the sum and sum of squares of ``count`` values (about any point);
    1.0 when there is no spread."""
    mean = total / count
    spread = float(np.sqrt(max(squares / count - mean * mean, 0.0)))
    return spread if spread > FLAT else 1.0
