"""The next-title model that serving and evaluation both score with.

A model is an item-to-item table over dense title codes: for each title, its strongest "what
comes next" neighbours with scores (compressed sparse rows), plus a popularity score per title.
A user's next title is scored as

    score(t) = sum over the user's recent titles h_i (most recent first) of
               weight[i] * neighbours[h_i][t]  +  popularity_weight * popularity[t]

Titles the user has already watched are excluded; when the neighbours do not fill the list,
popular titles do. Training decides what the neighbour table holds (transition counts over
one or more steps, co-watch similarity, ...) and the weights; the scorer does not care.

A model may also carry a sequence model (``sequence.py``) and its weight λ, chosen on a holdout
by training. Its scores are then blended with the table's over the titles the user has not
watched, each standardised per user (z = (s - mean) / std over those titles):

    blended(t) = z_table(t) + λ * z_sequence(t)

``blend.py`` ranks the blend without a pass over the catalog for its statistics, cheaply
enough for every request; ``dense_scores`` and ``recommend`` both rank with it.
``recommend(..., with_sequence=False)`` skips the network: the table's answer alone.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from .adjustments import Adjustments, ranked
from .blend import BlendedScorer, distinct
from .kernels import FLAT
from .sequence import SequenceModel

SEQUENCE_PREFIX = "sequence."  # payload arrays of the sequence model
ARRAY_TYPES = {
    "popularity": np.float32,
    "neighbour_offsets": np.int64,
    "neighbour_codes": np.int32,
    "neighbour_scores": np.float32,
}


@dataclasses.dataclass(frozen=True)
class PositionWeights:
    """Weight of the i-th most recent title: decay ** i, for the last ``window`` titles."""

    window: int = 5
    decay: float = 0.6

    def as_array(self) -> np.ndarray:
        return (self.decay ** np.arange(self.window)).astype(np.float32)


class NextTitleModel:
    def __init__(
        self,
        popularity: np.ndarray,
        neighbour_offsets: np.ndarray,
        neighbour_codes: np.ndarray,
        neighbour_scores: np.ndarray,
        weights: PositionWeights = PositionWeights(),
        popularity_weight: float = 1e-3,
        version: int = 0,
        trained_at: float = 0.0,
        params: dict | None = None,
        sequence: SequenceModel | None = None,
        sequence_weight: float = 0.0,
    ):
        self.popularity = np.asarray(popularity, dtype=np.float32)
        self.neighbour_offsets = np.asarray(neighbour_offsets, dtype=np.int64)
        self.neighbour_codes = np.asarray(neighbour_codes, dtype=np.int32)
        self.neighbour_scores = np.asarray(neighbour_scores, dtype=np.float32)
        if len(self.neighbour_offsets) != len(self.popularity) + 1:
            raise ValueError("neighbour_offsets must have one more entry than popularity")
        if len(self.neighbour_codes) != len(self.neighbour_scores):
            raise ValueError("neighbour_codes and neighbour_scores must have the same length")
        self.weights = weights
        self.position_weights = weights.as_array()  # by recency: [0] for the most recent title
        self.popularity_weight = float(popularity_weight)
        self.version = int(version)
        self.trained_at = float(trained_at)
        self.params = dict(params or {})
        if sequence is not None and sequence.title_count != self.title_count:
            raise ValueError(f"the sequence model knows {sequence.title_count} titles, the table {self.title_count}")
        self.sequence = sequence if sequence is not None and sequence_weight > 0 else None
        self.sequence_weight = float(sequence_weight) if self.sequence is not None else 0.0
        self._blend = BlendedScorer(self, self.sequence, self.sequence_weight) if self.sequence is not None else None
        # Most popular first; ties broken by the lower code so the fallback is deterministic.
        self.popular_order = np.lexsort((np.arange(len(self.popularity)), -self.popularity)).astype(np.int32)

    @property
    def title_count(self) -> int:
        return len(self.popularity)

    # -- scoring ---------------------------------------------------------------------------------
    def neighbour_terms(self, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every term of the table's sparse sum: (neighbour codes, weight * neighbour score as
        float64), most recent history title first. Codes unknown to this model (newer titles)
        are skipped."""
        recent = np.asarray(history, dtype=np.int64)[::-1][: self.weights.window]
        weights = self.position_weights[: len(recent)]
        known = (recent >= 0) & (recent < self.title_count)
        if not known.all():
            recent, weights = recent[known], weights[known]
        starts, ends = self.neighbour_offsets[recent], self.neighbour_offsets[recent + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        if total == 0:
            return np.empty(0, np.int32), np.empty(0, np.float64)
        # Positions of every recent title's neighbours in the flat arrays, without a Python loop.
        index = np.arange(total) + np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        return self.neighbour_codes[index], self.neighbour_scores[index].astype(np.float64) * np.repeat(weights, lengths)

    def candidate_scores(self, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sparse scores from the neighbour table: (codes, scores) for titles reachable from
        the user's recent history, codes ascending. Codes unknown to this model (newer
        titles) are skipped."""
        codes, scores = self.neighbour_terms(history)
        if len(codes) == 0:
            return np.empty(0, np.int32), np.empty(0, np.float32)
        # Sum the scores of each code: sort by code, then add up each run of equal codes.
        order = np.argsort(codes, kind="stable")
        codes, scores = codes[order], scores[order]
        run_starts = np.flatnonzero(np.concatenate(([True], codes[1:] != codes[:-1])))
        unique_codes = codes[run_starts]
        summed = np.add.reduceat(scores, run_starts)
        summed += self.popularity_weight * self.popularity[unique_codes]
        return unique_codes.astype(np.int32), summed.astype(np.float32)

    @property
    def has_sequence(self) -> bool:
        return self.sequence is not None

    def table_scores(self, history: np.ndarray) -> np.ndarray:
        """The table's scores for every title: the candidate scores, with every other title
        scored by popularity alone."""
        scores = self.popularity_weight * self.popularity.copy()
        codes, candidate = self.candidate_scores(history)
        scores[codes] = candidate
        return scores

    def dense_scores(self, history: np.ndarray, adjustments: Adjustments | None = None) -> np.ndarray:
        """Scores for every title, as full-ranking evaluation needs: what ``recommend`` ranks.
        With a sequence model, the blend up to a per-user shift and positive scale (``blend.py``).
        ``adjustments``: a deployment's rules, as serving applies them (``adjustments.py``)."""
        if adjustments is None or adjustments.empty:
            return self.table_scores(history) if self._blend is None else self._blend.scores(history)
        scores, spread = self.scores_and_spread(history)
        return adjustments.scores(scores, spread)

    def scores_and_spread(self, history: np.ndarray, with_sequence: bool = True) -> tuple[np.ndarray, float]:
        """Scores for every title and the spread of this user's scores over the titles not yet
        watched (the unit of a boost)."""
        if with_sequence and self._blend is not None:
            return self._blend.scores_and_spread(history)
        scores = self.table_scores(history)
        history = np.asarray(history, dtype=np.int64)
        watched = distinct(history[(history >= 0) & (history < self.title_count)])
        unwatched = np.ones(self.title_count, dtype=bool)
        unwatched[watched] = False
        spread = float(scores[unwatched].std()) if unwatched.any() else 0.0
        return scores.astype(np.float64), spread if spread > FLAT else 1.0

    def recommend(self, history: np.ndarray, k: int, with_sequence: bool = True,
                  adjustments: Adjustments | None = None) -> list[int]:
        """Top ``k`` title codes for a user, excluding titles in ``history``; popular titles
        fill what the neighbours leave. The popularity term in every score puts the more popular
        of two equally strong neighbours first; exactly equal scores go to the lower code, as in
        evaluation. With a sequence model (and ``with_sequence``), the blended scores rank.
        ``adjustments`` (rules, filters, demotions): every title scored, adjusted, then ranked;
        fewer than ``k`` only when fewer titles are allowed."""
        history = np.asarray(history, dtype=np.int64)
        if adjustments is not None and not adjustments.empty:
            scores, spread = self.scores_and_spread(history, with_sequence)
            return ranked(adjustments.scores(scores, spread), history, k)
        if with_sequence and self._blend is not None:
            return self._blend.top(history, k)
        codes, scores = self.candidate_scores(history)
        if len(codes):
            unwatched = ~_contains(np.sort(history), codes)
            codes, scores = codes[unwatched], scores[unwatched]
            order = np.lexsort((codes, -scores))[:k]
            chosen = codes[order].tolist()
        else:
            chosen = []
        if len(chosen) < k:
            chosen.extend(self.popular(k - len(chosen), exclude=np.concatenate([history, chosen])))
        return chosen

    def recommend_many(self, histories, k: int) -> list[list[int]]:
        """``recommend`` for each of several users (a batch saves nothing since one user's blend
        is cheap)."""
        return [self.recommend(h, k) for h in histories]

    def popular(self, k: int, exclude: np.ndarray | None = None) -> list[int]:
        """The ``k`` most popular titles not in ``exclude``."""
        if exclude is None or len(exclude) == 0:
            return self.popular_order[:k].tolist()
        excluded = set(np.asarray(exclude, dtype=np.int64).tolist())
        chosen: list[int] = []
        for code in self.popular_order[: k + len(excluded)].tolist():
            if code not in excluded:
                chosen.append(code)
                if len(chosen) == k:
                    break
        return chosen

    # -- serialisation (the store writes these bytes; nothing here knows about Redis) ----------
    def to_payload(self) -> tuple[dict[str, bytes], dict[str, str]]:
        arrays = {name: getattr(self, name).astype(dtype).tobytes() for name, dtype in ARRAY_TYPES.items()}
        meta = {
            "version": str(self.version),
            "trained_at": repr(self.trained_at),
            "titles": str(self.title_count),
            "window": str(self.weights.window),
            "decay": repr(self.weights.decay),
            "popularity_weight": repr(self.popularity_weight),
            "params": json.dumps(self.params, sort_keys=True),
        }
        if self.sequence is not None:
            sequence_arrays, sequence_meta = self.sequence.to_payload()
            arrays.update({SEQUENCE_PREFIX + name: data for name, data in sequence_arrays.items()})
            meta.update({SEQUENCE_PREFIX + name: value for name, value in sequence_meta.items()})
            meta["sequence_weight"] = repr(self.sequence_weight)
        return arrays, meta

    @classmethod
    def from_payload(cls, arrays: dict[str, bytes], meta: dict[str, str]) -> "NextTitleModel":
        loaded = {name: np.frombuffer(arrays[name], dtype=dtype) for name, dtype in ARRAY_TYPES.items()}
        sequence = None
        if "sequence_weight" in meta:
            cut = len(SEQUENCE_PREFIX)
            sequence = SequenceModel.from_payload(
                {name[cut:]: data for name, data in arrays.items() if name.startswith(SEQUENCE_PREFIX)},
                {name[cut:]: value for name, value in meta.items() if name.startswith(SEQUENCE_PREFIX)})
        return cls(
            sequence=sequence,
            sequence_weight=float(meta.get("sequence_weight", 0.0)),
            **loaded,
            weights=PositionWeights(int(meta["window"]), float(meta["decay"])),
            popularity_weight=float(meta["popularity_weight"]),
            version=int(meta["version"]),
            trained_at=float(meta["trained_at"]),
            params=json.loads(meta.get("params") or "{}"),
        )

    @classmethod
    def from_neighbour_lists(
        cls, popularity: np.ndarray, neighbours: dict[int, list[tuple[int, float]]], **options
    ) -> "NextTitleModel":
        """Build from {code: [(next_code, score), ...]}, as training produces it."""
        count = len(popularity)
        offsets = np.zeros(count + 1, dtype=np.int64)
        for code, row in neighbours.items():
            offsets[code + 1] = len(row)
        offsets = np.cumsum(offsets)
        codes = np.zeros(offsets[-1], dtype=np.int32)
        scores = np.zeros(offsets[-1], dtype=np.float32)
        for code, row in neighbours.items():
            start = offsets[code]
            for j, (target, score) in enumerate(row):
                codes[start + j], scores[start + j] = target, score
        return cls(popularity, offsets, codes, scores, **options)


def unwatched_mask(history: np.ndarray, title_count: int) -> np.ndarray:
    """True for every title not in ``history`` (codes outside the catalog are ignored)."""
    mask = np.ones(title_count, dtype=bool)
    history = np.asarray(history, dtype=np.int64)
    mask[history[(history >= 0) & (history < title_count)]] = False
    return mask


def standardised(scores: np.ndarray, over: np.ndarray) -> np.ndarray:
    """(scores - mean) / std, both taken over the titles where ``over`` is True: the blend's
    definition, written plainly (``blend.py`` ranks as it does without computing it)."""
    return standardised_rows(np.asarray(scores)[None], np.asarray(over)[None])[0]


def standardised_rows(scores: np.ndarray, over: np.ndarray) -> np.ndarray:
    """``standardised`` for each row of (users, titles) ``scores``, ``over`` alike: one pass
    for a block of users. A row with no title in ``over`` is standardised over all titles; a
    row with no spread is only centred."""
    scores = np.asarray(scores, dtype=np.float64)
    over = np.asarray(over, dtype=bool)
    over = over | ~over.any(axis=1, keepdims=True)
    count = over.sum(axis=1, keepdims=True)
    mean = np.where(over, scores, 0.0).sum(axis=1, keepdims=True) / count
    centred = scores - mean
    spread = np.sqrt(np.where(over, centred * centred, 0.0).sum(axis=1, keepdims=True) / count)
    return centred / np.where(spread > FLAT, spread, 1.0)


def _contains(sorted_values: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """For each candidate, whether it is in ``sorted_values`` (cheaper than np.isin for the
    short arrays of one request, and no allocation the size of the catalog)."""
    if len(sorted_values) == 0:
        return np.zeros(len(candidates), dtype=bool)
    position = np.minimum(np.searchsorted(sorted_values, candidates), len(sorted_values) - 1)
    return sorted_values[position] == candidates
