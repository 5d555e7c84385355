"""What a deployment's rules and a request's filters change in a user's ranking, over the
model's title codes, applied the same way when serving and in evaluation.

- ``allowed``: titles that may be recommended at all (filters, availability, the blocklist);
- ``boosts``: titles lifted (or lowered) by a weight in standard deviations of this user's
  scores over the titles not yet watched, so one weight means the same for every user and model
  (a boost of 1 lifts a title by one spread of the user's scores);
- ``first``: one title put first (the next episode of a series in progress);
- ``demoted``: titles ranked after every other allowed title (shown too often without a
  watch), still better than nothing when the catalog runs out.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .blend import top_codes

DEMOTED = -1e300  # below any real score, above -inf (never recommended)


@dataclasses.dataclass(frozen=True)
class Adjustments:
    allowed: np.ndarray | None = None
    boost_codes: np.ndarray | None = None
    boost_weights: np.ndarray | None = None
    first: int | None = None
    demoted: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        return (self.allowed is None and self.boost_codes is None and self.first is None
                and (self.demoted is None or len(self.demoted) == 0))

    def scores(self, scores: np.ndarray, spread: float) -> np.ndarray:
        """``scores`` (float64, one per title) adjusted: boosts added, disallowed titles at
        -inf, demoted ones at DEMOTED, the first one above every other."""
        adjusted = np.array(scores, dtype=np.float64)
        count = len(adjusted)
        if self.boost_codes is not None and len(self.boost_codes):
            inside = self.boost_codes < count
            np.add.at(adjusted, self.boost_codes[inside], self.boost_weights[inside] * spread)
        if self.allowed is not None:
            adjusted[~_fit(self.allowed, count)] = -np.inf
        if self.demoted is not None and len(self.demoted):
            demoted = self.demoted[self.demoted < count]
            adjusted[demoted[np.isfinite(adjusted[demoted])]] = DEMOTED
        if self.first is not None and 0 <= self.first < count and np.isfinite(adjusted[self.first]):
            adjusted[self.first] = np.inf  # above any finite score; -inf stays what is not allowed
        return adjusted


def ranked(scores: np.ndarray, watched: np.ndarray, k: int) -> list[int]:
    """The ``k`` best titles of adjusted ``scores`` outside ``watched``, never one at -inf."""
    scores = np.array(scores, dtype=np.float64)
    scores[watched[(watched >= 0) & (watched < len(scores))]] = -np.inf
    first = np.flatnonzero(scores == np.inf)
    scores[first] = -np.inf
    chosen = first.tolist()[:k]
    if len(chosen) < k:
        finite = int(np.isfinite(scores).sum())
        chosen += top_codes(scores, min(k - len(chosen), finite))
    return chosen


def _fit(mask: np.ndarray, count: int) -> np.ndarray:
    """``mask`` cut or padded (with True: titles it does not know are not filtered) to ``count``."""
    if len(mask) >= count:
        return mask[:count]
    return np.concatenate([mask, np.ones(count - len(mask), dtype=bool)])
