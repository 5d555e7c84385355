"""The NumPy kernels that the default model's Spark job runs inside its tasks.

Spark groups the events into one title sequence per user and moves partial results between
tasks; the per-user work, which is where the time goes (every title paired with the next
``max_lead`` titles, and with every other title the user watched), runs here on whole arrays.
Generating those pairs as Spark rows made 1M events take minutes; here a task turns a batch of
users into pair sums at NumPy speed, and Spark only adds up the sums of different tasks.

Pairs are keyed by one int64, ``a * PAIR_BASE + b`` (title codes are non-negative int32).

No Spark and no Redis in this module: it is tested against a plain-Python reference.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

PAIR_BASE = np.int64(1 << 31)


def split_key(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of pair keys."""
    return (key >> 31).astype(np.int64), (key & (PAIR_BASE - 1)).astype(np.int64)


def flatten(sequences: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Users' title sequences as one array of titles and the start offset of every user
    (``len(users) + 1`` offsets)."""
    sequences = [np.asarray(s, dtype=np.int64) for s in sequences]
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    titles = np.concatenate(sequences) if sequences else np.zeros(0, dtype=np.int64)
    return titles, offsets


def lead_pairs(titles: np.ndarray, offsets: np.ndarray, gammas: Sequence[float], max_lead: int):
    """Every (a, b) where b came d <= ``max_lead`` steps after a in one user's titles, a != b:
    the pair keys and, per γ, the weight γ^(d-1) of each occurrence (not yet summed)."""
    user_end = np.repeat(offsets[1:], np.diff(offsets))  # for every title: where its user ends
    positions = np.arange(len(titles), dtype=np.int64)
    keys, weights = [], [[] for _ in gammas]
    for d in range(1, max_lead + 1):
        first = positions[positions + d < user_end]
        if not len(first):
            break
        a, b = titles[first], titles[first + d]
        different = a != b
        keys.append(a[different] * PAIR_BASE + b[different])
        for column, gamma in zip(weights, gammas):
            column.append(np.full(int(different.sum()), float(gamma) ** (d - 1)))
    if not keys:
        return np.zeros(0, dtype=np.int64), [np.zeros(0) for _ in gammas]
    return np.concatenate(keys), [np.concatenate(column) for column in weights]


def recent_distinct(titles: np.ndarray, offsets: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's distinct titles, most recently watched first, at most ``limit`` per user:
    ``(titles, offsets)`` in the same layout as the input."""
    users = len(offsets) - 1
    owner = np.repeat(np.arange(users, dtype=np.int64), np.diff(offsets))
    # Newest first inside each user: reverse the positions within each user's block.
    reversed_at = offsets[owner] + offsets[owner + 1] - 1 - np.arange(len(titles))
    newest_first = titles[reversed_at]
    span = np.int64(titles.max() + 1) if len(titles) else np.int64(1)
    _, first_seen = np.unique(owner * span + newest_first, return_index=True)
    first_seen.sort()  # back to newest-first order, user by user
    kept_owner = owner[first_seen]
    counts = np.bincount(kept_owner, minlength=users)
    starts = np.zeros(users + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    rank = np.arange(len(first_seen)) - starts[kept_owner]
    keep = rank < limit
    kept_counts = np.bincount(kept_owner[keep], minlength=users)
    kept_offsets = np.zeros(users + 1, dtype=np.int64)
    np.cumsum(kept_counts, out=kept_offsets[1:])
    return newest_first[first_seen[keep]], kept_offsets


def cowatch_pairs(kept: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The key of every unordered pair of titles that one user watched both of, once per user
    and in both orientations (a, b) and (b, a). ``kept`` holds distinct titles per user."""
    lengths = np.diff(offsets)
    owner_end = np.repeat(offsets[1:], lengths)
    later = owner_end - np.arange(len(kept)) - 1  # titles after each one in its user's list
    total = int(later.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.repeat(np.arange(len(kept), dtype=np.int64), later)
    group_start = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum(later, out=group_start[1:])
    second = first + 1 + (np.arange(total, dtype=np.int64) - np.repeat(group_start[:-1], later))
    a, b = kept[first], kept[second]
    return np.concatenate([a * PAIR_BASE + b, b * PAIR_BASE + a])


def pair_sums(titles: np.ndarray, offsets: np.ndarray, gammas: Sequence[float], max_lead: int,
              max_user_titles: int, with_cosine: bool) -> dict[str, np.ndarray]:
    """Everything the default model needs per ordered pair (a, b), summed over the given users:
    ``key``; per γ ``f<i>`` = Σ γ^(d-1) over b following a, ``r<i>`` = the same for a following
    b; ``co`` = users who watched both (among each user's last ``max_user_titles`` distinct
    titles). ``<i>`` is the γ's index in ``gammas``. Pairs with nothing are absent."""
    forward, weights = lead_pairs(titles, offsets, gammas, max_lead)
    a, b = split_key(forward)
    backward = b * PAIR_BASE + a
    parts = [forward, backward]
    if with_cosine:
        kept, kept_offsets = recent_distinct(titles, offsets, max_user_titles)
        parts.append(cowatch_pairs(kept, kept_offsets))
    keys = np.concatenate(parts)
    unique, where = np.unique(keys, return_inverse=True)
    n_lead = len(forward)
    out = {"key": unique}
    for i, column in enumerate(weights):
        out[f"f{i}"] = np.bincount(where[:n_lead], weights=column, minlength=len(unique))
        out[f"r{i}"] = np.bincount(where[n_lead:2 * n_lead], weights=column, minlength=len(unique))
    co = np.bincount(where[2 * n_lead:], minlength=len(unique)).astype(np.float64)
    out["co"] = co
    return out


def merge_sums(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Pair sums of several parts (at least one; same columns) as one: each key once,
    ascending, its values added."""
    nonempty = [part for part in parts if len(part["key"])]
    if not nonempty:
        return dict(parts[0])
    if len(nonempty) == 1 and np.all(nonempty[0]["key"][1:] > nonempty[0]["key"][:-1]):
        return dict(nonempty[0])  # already each key once, ascending
    parts = nonempty
    unique, where = np.unique(np.concatenate([part["key"] for part in parts]), return_inverse=True)
    merged = {"key": unique}
    for name in parts[0]:
        if name != "key":
            merged[name] = np.bincount(where, weights=np.concatenate([part[name] for part in parts]),
                                       minlength=len(unique))
    return merged


class SumAccumulator:
    """Pair sums added up chunk by chunk inside one task, merged whenever the pending rows
    outgrow the merged ones, so that each pair leaves the task once. Past ``max_rows`` merged
    pairs (a large catalog) the sums so far are handed out (:meth:`take`) and counting starts
    afresh: a task's memory stays bounded, at the price of a pair leaving it more than once
    (the ranking stage adds those rows up)."""

    def __init__(self, max_rows: int):
        self.max_rows = max_rows
        self.merged: dict[str, np.ndarray] | None = None
        self.pending: list[dict[str, np.ndarray]] = []
        self.pending_rows = 0

    def add(self, sums: dict[str, np.ndarray]) -> None:
        self.pending.append(sums)
        self.pending_rows += len(sums["key"])
        if self.pending_rows > (len(self.merged["key"]) if self.merged else 0):
            self._merge()

    @property
    def full(self) -> bool:
        return self.merged is not None and len(self.merged["key"]) >= self.max_rows

    def take(self) -> dict[str, np.ndarray] | None:
        """Everything summed so far (None for nothing); the accumulator starts empty again."""
        self._merge()
        taken, self.merged = self.merged, None
        return taken

    def _merge(self) -> None:
        if self.pending:
            self.merged = merge_sums(([self.merged] if self.merged else []) + self.pending)
            self.pending, self.pending_rows = [], 0


def top_neighbours(key: np.ndarray, columns: dict[str, np.ndarray], audience: np.ndarray,
                   points: Sequence[tuple[int, float, float]], top_n: int) -> dict[str, np.ndarray]:
    """Rank every source's targets for each parameter point.

    ``key``/``columns``: summed pairs as from :func:`pair_sums`, holding ALL pairs of every
    source present (Spark partitions them by source). ``audience[t]``: users counted for title
    t's co-watch. ``points``: (γ index, back, η). Per point and source a, the score of b is
    ``T[a,b] + η · cos[a,b]`` with ``C = f + back · r``, ``T = C / sqrt(Σ_b C[a,b])`` and
    ``cos = co / sqrt(audience[a] · audience[b])``; the ``top_n`` best with a score above 0 are
    kept, ties to the lower b. Returns ``point`` (index into ``points``), ``a``, ``b``,
    ``score``, ``rank`` (1 = best).
    """
    if len(key) > 1 and not np.all(key[1:] > key[:-1]):
        raise ValueError("top_neighbours needs each pair once, keys ascending (merge_sums gives that)")
    a, b = split_key(key)
    sources, source_index = np.unique(a, return_inverse=True)
    co = columns["co"]
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = np.where(co > 0, co / np.sqrt(audience[a].astype(np.float64) * audience[b]), 0.0)
    found: dict[str, list[np.ndarray]] = {"point": [], "a": [], "b": [], "score": [], "rank": []}
    for index, (gamma_index, back, eta) in enumerate(points):
        pair = columns[f"f{gamma_index}"] + back * columns[f"r{gamma_index}"]
        row_total = np.bincount(source_index, weights=pair, minlength=len(sources))[source_index]
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = np.where(row_total > 0, pair / np.sqrt(row_total), 0.0)
        score = scaled + eta * cosine
        positive = np.flatnonzero(score > 0)
        # Keys come sorted by (a, b) and lexsort is stable, so equal scores stay in b order.
        order = positive[np.lexsort((-score[positive], a[positive]))]
        ordered_a = a[order]
        starts = np.r_[0, np.flatnonzero(ordered_a[1:] != ordered_a[:-1]) + 1]
        rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)])) + 1
        kept = order[rank <= top_n]
        found["point"].append(np.full(len(kept), index, dtype=np.int32))
        found["a"].append(a[kept].astype(np.int32))
        found["b"].append(b[kept].astype(np.int32))
        found["score"].append(score[kept])
        found["rank"].append(rank[rank <= top_n].astype(np.int32))
    return {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in found.items()}
