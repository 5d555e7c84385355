"""One user's blend (``blend.py`` gives the arithmetic) as one compiled call (numba): the table's
sums over the titles the history reaches, both spreads, the network, the product over the
catalog, and either the top k or every title's score.

As NumPy these were some 60 calls of 2-3 us dispatch each, whatever they computed: most of a
watch's blend (``bench/sequence_cost.py --steps``). ``top`` and ``scores`` share every step, so
serving's top k is exactly what evaluation ranks (tests/test_sequence_model.py).

Only the product over the catalog uses ``fastmath`` (its dot products in SIMD); the table's sums
are added in the order NumPy added them (``np.bincount`` visits the terms in order).
"""

from __future__ import annotations

import numba
import numpy as np

from .network_kernels import FAST, last_states

FLAT = 1e-12  # a spread at most this is no spread: the scores are only centred (``standardised`` too)


@numba.njit(cache=True, nogil=True)
def table_sparse(history, position_weights, offsets, neighbour_codes, neighbour_scores, popular_part, centre,
                 watched):
    """The table's sums from a ``history`` (codes, oldest first): its most recent titles, one per
    entry of ``position_weights`` (unknown codes skipped, their weight with them), add weight x
    neighbour score to each neighbour. Returns (the reached codes ascending, the table's score at
    each less ``centre``, the same at the ``watched`` codes). A title's score is the float32
    rounding of its float64 sum plus ``popular_part`` (what ``table_scores`` computes)."""
    titles = popular_part.shape[0]
    recent = min(position_weights.shape[0], history.shape[0])
    terms = 0
    for i in range(recent):
        title = history[history.shape[0] - 1 - i]
        if 0 <= title < titles:
            terms += offsets[title + 1] - offsets[title]
    summed = np.zeros(titles, np.float64)
    reached_flag = np.zeros(titles, np.bool_)
    first_met = np.empty(min(terms, titles), np.int64)
    count = 0
    for i in range(recent):
        title = history[history.shape[0] - 1 - i]
        if not 0 <= title < titles:
            continue
        weight = np.float64(position_weights[i])
        for j in range(offsets[title], offsets[title + 1]):
            code = neighbour_codes[j]
            summed[code] += np.float64(neighbour_scores[j]) * weight
            if not reached_flag[code]:
                reached_flag[code] = True
                first_met[count] = code
                count += 1
    reached = np.sort(first_met[:count])
    at_reached = np.empty(count, np.float64)
    for i in range(count):
        code = reached[i]
        at_reached[i] = np.float64(np.float32(summed[code] + popular_part[code])) - centre
    at_watched = np.empty(watched.shape[0], np.float64)
    for i in range(watched.shape[0]):
        code = watched[i]
        at_watched[i] = np.float64(np.float32(summed[code] + popular_part[code])) - centre
    return reached, at_reached, at_watched


@numba.njit(cache=True, nogil=True)
def top_blended(learned, popular_centred, reached, at_reached, watched, k):
    """The ``k`` best codes by learned + table, best first, equal scores to the lower code: the
    table is ``popular_centred`` except at the ``reached`` codes (``at_reached``); ``watched``
    codes are left out."""
    scores = blended_scores(learned, popular_centred, reached, at_reached)
    for code in watched:
        scores[code] = -np.inf
    best_scores = np.full(k, -np.inf)
    best_codes = np.empty(k, np.int64)
    held = 0
    floor = -np.inf  # the k-th best so far: a title must beat it (codes ascend, so an equal one stays behind)
    for code in range(scores.shape[0]):
        score = scores[code]
        if score <= floor and held == k:
            continue
        if score == -np.inf:
            continue
        place = held if held < k else k - 1
        while place > 0 and best_scores[place - 1] < score:
            best_scores[place] = best_scores[place - 1]
            best_codes[place] = best_codes[place - 1]
            place -= 1
        best_scores[place] = score
        best_codes[place] = code
        if held < k:
            held += 1
        if held == k:
            floor = best_scores[k - 1]
    return best_codes[:held]


@numba.njit(cache=True, nogil=True)
def _spread(total, squares, count):
    """Standard deviation from the sum and sum of squares of ``count`` values (about any point);
    1.0 when there is no spread."""
    mean = total / count
    spread = np.sqrt(max(squares / count - mean * mean, 0.0))
    return spread if spread > FLAT else 1.0


@numba.njit(cache=True, fastmath=FAST, nogil=True)
def _catalog_product(items, vector):
    out = np.empty(items.shape[0], np.float32)
    for title in range(items.shape[0]):
        total = np.float32(0.0)
        for k in range(items.shape[1]):
            total += items[title, k] * vector[k]
        out[title] = total
    return out


@numba.njit(cache=True, nogil=True)
def blend_parts(history, weight, position_weights, offsets, neighbour_codes, neighbour_scores, popular_part,
                popular_centred, table_centre, table_sum, table_squares, items, item_mean, item_scatter,
                positions, input_scale, network):
    """The parts of the blend of ``history`` (codes, oldest first): (c·S over the catalog,
    float32; the titles the table reaches and its scores there, less its centre; the watched
    titles, ascending; the table's spread). ``network``: ``FoldedNetwork.arrays()``."""
    titles = popular_part.shape[0]
    known_count = 0
    for code in history:
        if 0 <= code < titles:
            known_count += 1
    known = np.empty(known_count, np.int64)
    found = 0
    for code in history:
        if 0 <= code < titles:
            known[found] = code
            found += 1
    watched = np.unique(known)
    unwatched = titles - watched.shape[0]
    if unwatched == 0:  # every title watched: moments over all titles
        unwatched = titles
    moments_watched = watched if unwatched != titles else watched[:0]

    reached, at_reached, at_watched = table_sparse(history, position_weights, offsets, neighbour_codes,
                                                   neighbour_scores, popular_part, table_centre, moments_watched)
    total, squares = table_sum, table_squares
    for i in range(reached.shape[0]):
        base = popular_centred[reached[i]]
        total += at_reached[i] - base
        squares += at_reached[i] * at_reached[i] - base * base
    for value in at_watched:
        total -= value
        squares -= value * value
    table_spread = _spread(total, squares, unwatched)

    recent = known[max(0, known_count - positions.shape[0]):]
    offsets_one = np.array([0, recent.shape[0]], np.int64)
    state = last_states(recent, offsets_one, items, positions, input_scale, *network)[0]

    sequence_total, sequence_squares = score_moments(state, items, item_mean, item_scatter, moments_watched)
    sequence_spread = _spread(sequence_total, max(sequence_squares, 0.0), unwatched)

    scale = np.float32(weight * table_spread / sequence_spread)
    learned = _catalog_product(items, state * scale)
    return learned, reached, at_reached, watched, table_spread


@numba.njit(cache=True, nogil=True)
def score_moments(state, items, item_mean, item_scatter, excluded):
    """Sum and sum of squares, about the mean score of all titles, of the network's scores
    ``items @ state`` of every title but the ``excluded`` codes (distinct, known), without a
    pass over the catalog: from the items' mean and scatter matrix (float64, precomputed), less
    the excluded titles' own scores. The squares may come out a rounding below 0."""
    d = state.shape[0]
    squares = 0.0
    centre = 0.0
    for i in range(d):
        row = 0.0
        for j in range(d):
            row += item_scatter[i, j] * np.float64(state[j])
        squares += np.float64(state[i]) * row
        centre += np.float64(state[i]) * item_mean[i]
    total = 0.0
    for code in excluded:
        own = -centre
        for i in range(d):
            own += np.float64(items[code, i]) * np.float64(state[i])
        total -= own
        squares -= own * own
    return total, squares


@numba.njit(cache=True, nogil=True)
def blended_scores(learned, popular_centred, reached, at_reached):
    """Every title's blended score (float64): learned + the table less its centre."""
    out = np.empty(learned.shape[0], np.float64)
    for code in range(learned.shape[0]):
        out[code] = np.float64(learned[code]) + popular_centred[code]
    for i in range(reached.shape[0]):
        out[reached[i]] = np.float64(learned[reached[i]]) + at_reached[i]
    return out
