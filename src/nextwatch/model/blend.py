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
``kernels.py`` computes all of it for one history in one compiled call.
"""

from __future__ import annotations

import numpy as np

from . import kernels
from .sequence import SequenceModel

SAMPLE_PER_RESULT = 32  # titles sampled per wanted result to bound the k-th best score from below


class BlendedScorer:
    """Scores of ``table`` (a ``NextTitleModel``) blended with ``sequence`` at ``weight``."""

    def __init__(self, table, sequence: SequenceModel, weight: float):
        self.table, self.sequence, self.weight = table, sequence, float(weight)
        self.title_count = table.title_count
        # The table's score of a title no neighbour reaches, as ``table_scores`` computes it
        # (float32), and the same less the mean over the catalog (the centre of its moments).
        self.popular_part = table.popularity_weight * table.popularity
        popular_part = self.popular_part.astype(np.float64)
        self.table_centre = float(popular_part.mean())
        self.popular_centred = popular_part - self.table_centre
        self.table_sum = float(self.popular_centred.sum())
        self.table_squares = float(self.popular_centred @ self.popular_centred)

    def scores(self, history: np.ndarray) -> np.ndarray:
        """float64 scores of every title, ranked as the blend ranks them (module docstring)."""
        return self.scores_and_spread(history)[0]

    def scores_and_spread(self, history: np.ndarray) -> tuple[np.ndarray, float]:
        """``scores``, and the spread that turns a difference of them into standard deviations
        of the blend (z units): boosts (``adjustments.py``) are added in those units."""
        learned, reached, at_reached, _watched, table_spread = self._parts(history)
        return kernels.blended_scores(learned, self.popular_centred, reached, at_reached), table_spread

    def top(self, history: np.ndarray, k: int) -> list[int]:
        """The ``k`` best titles outside ``history`` by ``scores``; equal scores to the lower code."""
        learned, reached, at_reached, watched, _spread = self._parts(history)
        k = min(k, self.title_count - len(watched))
        if k <= 0:
            return []
        return kernels.top_blended(learned, self.popular_centred, reached, at_reached, watched, k).tolist()

    def _parts(self, history: np.ndarray):
        """(c·S over the catalog, the titles the table reaches, its scores there, the watched
        titles, the table's spread): ``kernels.blend_parts``, one compiled call."""
        table = self.table
        return kernels.blend_parts(
            np.asarray(history, dtype=np.int64), self.weight, table.position_weights, table.neighbour_offsets,
            table.neighbour_codes, table.neighbour_scores, self.popular_part, self.popular_centred, self.table_centre,
            self.table_sum, self.table_squares, *self.sequence.kernel_inputs)


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


def distinct(codes: np.ndarray) -> np.ndarray:
    """The distinct values of a short array, ascending (``np.unique`` costs more on these)."""
    ordered = np.sort(codes)
    if len(ordered) < 2:
        return ordered
    first = np.empty(len(ordered), dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]
