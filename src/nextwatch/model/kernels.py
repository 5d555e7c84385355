"""The model's compiled loops (numba): the sequence network's forward pass, for one history or
many, and one user's blend in one call.

Why one file: numba keeps compiled code in ``__pycache__`` beside this file (``cache=True``) and
decides whether it is still valid by a hash of the file of the function it compiled, and of that
file only. A kernel that calls a kernel of another file carries the callee's machine code in its
own cache entry; when only the callee's file changed, the caller's entry still looks valid and
runs the old callee (seen: the blend kept running the network's previous code after the
network's own file changed, when the two were apart). In one file, any change to any kernel
invalidates them all.
tests/test_compiled_kernels.py keeps every kernel's calls inside this module.

## The network

Why compiled: one request's network is a few dozen small products (at most 50 x 64 by 64 x 64).
As NumPy calls each cost 2-3 microseconds of dispatch whatever it computes, and about 85 of them
made 130-300 us of a watch's time (``bench/sequence_cost.py --steps``); compiled, the arithmetic is
all that is left. The weights come prepared by ``attention.FoldedNetwork`` (folded, stacked per
block, every matrix transposed so that each output is one dot product over contiguous memory:
the loop shape LLVM turns into SIMD code). A block runs each step over all its rows before the
next step, so that every product takes four rows at a time and loads each weight once for them:
70-74 against 99-106 us for a 50-title history (four interleaved runs of one process each).

Two functions of libm would run one value at a time in such loops (a call each): ``exp`` in the
softmax and ``tanh`` in GELU, 4,500 calls for a 50-title history. ``exp_in_place`` computes
2^(x log2 e) as 2^n (written into the exponent bits) times a polynomial for 2^f, f in
[-1/2, 1/2], in plain arithmetic that vectorises; its relative error is about 1e-7, float32's
own rounding. GELU's tanh is rewritten through it: x (1 + tanh(y)) = 2x / (1 + e^(-2y)).

Arithmetic is float32, as NumPy's was; sums may be reassociated (``fastmath`` "reassoc" and
"contract", which is what lets a dot product use SIMD): scores move in the last bits against the
PyTorch network, which tests/test_sequence_model.py bounds. The same history always gives the
same scores on the same machine. A process pays the compile (seconds) only when the cache is
missing or stale; ``compiled.py`` pays it before serving starts.

## The blend

One user's blend (``blend.py`` gives the arithmetic) as one compiled call: the table's
sums over the titles the history reaches, both spreads, the network, the product over the
catalog, and either the top k or every title's score.

As NumPy these were some 60 calls of 2-3 us dispatch each, whatever they computed: most of a
watch's blend (``bench/sequence_cost.py --steps``). ``top`` and ``scores`` share every step, so
serving's top k is exactly what evaluation ranks (tests/test_sequence_model.py).

Only the product over the catalog uses ``fastmath`` (its dot products in SIMD); the table's sums
are added in the order NumPy added them (``np.bincount`` visits the terms in order).
"""

from __future__ import annotations

import math

import numba
import numpy as np

FAST = {"reassoc", "contract", "nsz"}  # not "nnan"/"ninf": masks and clamps keep their meaning
LAYER_NORM_EPSILON = np.float32(1e-5)
GELU_SCALE = np.float32(math.sqrt(2.0 / math.pi))
GELU_CUBIC = np.float32(math.sqrt(2.0 / math.pi) * 0.044715)
LOG2_E = np.float32(1.0 / math.log(2.0))
EXP_FLOOR = np.float32(-87.0)  # e^-87 is float32's smallest normal scale: 2^n stays a normal number
EXP_CEILING = np.float32(88.0)


def _exp2_polynomial(degree: int = 7) -> tuple[float, ...]:
    """Coefficients (constant first) of a least-squares polynomial for 2^f on [-1/2, 1/2], fitted
    in float64 on Chebyshev points: relative error under 1e-9, below float32's rounding."""
    points = 0.5 * np.cos(np.pi * (np.arange(64) + 0.5) / 64)
    return tuple(np.polynomial.polynomial.polyfit(points, np.exp2(points), degree).tolist())


_C = tuple(np.float32(c) for c in _exp2_polynomial())
C0, C1, C2, C3, C4, C5, C6, C7 = _C


@numba.njit(cache=True, fastmath=FAST, nogil=True)
def exp_in_place(values, count, exponent_bits):
    """values[:count] = e^values[:count] (module docstring); ``exponent_bits``: int32 scratch of
    at least ``count``."""
    scale = exponent_bits.view(np.float32)
    for j in range(count):
        t = min(max(values[j], EXP_FLOOR), EXP_CEILING) * LOG2_E
        n = np.floor(t + np.float32(0.5))
        f = t - n
        values[j] = C0 + f * (C1 + f * (C2 + f * (C3 + f * (C4 + f * (C5 + f * (C6 + f * C7))))))
        exponent_bits[j] = (np.int32(n) + np.int32(127)) << np.int32(23)
    for j in range(count):
        values[j] *= scale[j]


@numba.njit(cache=True, fastmath=FAST, nogil=True)
def _normalise(row, out):
    """out = (row - mean) / sqrt(variance + eps): a layer norm without scale or shift (those are
    folded into the weights that read it)."""
    d = row.shape[0]
    mean = np.float32(0.0)
    for k in range(d):
        mean += row[k]
    mean /= np.float32(d)
    spread = np.float32(0.0)
    for k in range(d):
        centred = row[k] - mean
        out[k] = centred
        spread += centred * centred
    spread = np.sqrt(spread / np.float32(d) + LAYER_NORM_EPSILON)
    for k in range(d):
        out[k] /= spread


@numba.njit(cache=True, fastmath=FAST, nogil=True)
def _rows_product(a, matrix_t, out, first, n, accumulate):
    """out[i] = a[i] @ matrix (or += with ``accumulate``) for first <= i < n, from the matrix
    transposed (outputs x inputs). Four rows at a time: each row of the matrix is loaded once
    for four dot products (the module docstring has what that bought)."""
    outputs, inputs = matrix_t.shape
    i = first
    while i + 4 <= n:
        for j in range(outputs):
            t0, t1, t2, t3 = np.float32(0.0), np.float32(0.0), np.float32(0.0), np.float32(0.0)
            for k in range(inputs):
                weight = matrix_t[j, k]
                t0 += a[i, k] * weight
                t1 += a[i + 1, k] * weight
                t2 += a[i + 2, k] * weight
                t3 += a[i + 3, k] * weight
            if accumulate:
                out[i, j] += t0
                out[i + 1, j] += t1
                out[i + 2, j] += t2
                out[i + 3, j] += t3
            else:
                out[i, j], out[i + 1, j], out[i + 2, j], out[i + 3, j] = t0, t1, t2, t3
        i += 4
    while i < n:
        for j in range(outputs):
            total = np.float32(0.0)
            for k in range(inputs):
                total += a[i, k] * matrix_t[j, k]
            if accumulate:
                out[i, j] += total
            else:
                out[i, j] = total
        i += 1


@numba.njit(cache=True, fastmath=FAST, nogil=True)
def _attend(query, normal, keys, weights, bits, mixed):
    """mixed = the softmax of ``query`` . normal[j] over the first ``keys`` rows, applied to
    those rows."""
    d = normal.shape[1]
    for j in range(keys):
        total = np.float32(0.0)
        for k in range(d):
            total += query[k] * normal[j, k]
        weights[j] = total
    top = weights[0]
    for j in range(1, keys):
        top = max(top, weights[j])
    for j in range(keys):
        weights[j] -= top
    exp_in_place(weights, keys, bits)
    norm = np.float32(0.0)
    for j in range(keys):
        norm += weights[j]
    mixed[:] = 0.0
    for j in range(keys):
        weight = weights[j]
        for k in range(d):
            mixed[k] += weight * normal[j, k]
    for k in range(d):
        mixed[k] /= norm


@numba.njit(cache=True, fastmath=FAST, nogil=True)
def _forward(x, scores_t, score_bias, values_t, value_bias, hidden_t, hidden_bias, out_t, out_bias,
             final_w, final_b, result, normal, query, weights, mixed, row_normal, hidden, bits):
    """The network's output at the last row of ``x`` (titles x d, changed in place) into
    ``result``; the rest are scratch arrays (query, mixed, row_normal and hidden with a row per
    title). Blocks before the last compute every row (the next block's keys); the last computes
    only the row that is scored. Each step runs over all rows before the next, so that the
    products go four rows at a time (``_rows_product``)."""
    n, d = x.shape
    blocks, heads = scores_t.shape[0], scores_t.shape[1]
    for b in range(blocks):
        first = 0 if b < blocks - 1 else n - 1
        for i in range(n):
            _normalise(x[i], normal[i])
        for i in range(first, n):
            for k in range(d):
                x[i, k] += value_bias[b, k]
        for h in range(heads):
            _rows_product(normal, scores_t[b, h], query, first, n, False)
            for i in range(first, n):
                for k in range(d):
                    query[i, k] += score_bias[b, h, k]
                _attend(query[i], normal, i + 1, weights, bits, mixed[i])  # causal: itself and before
            _rows_product(mixed, values_t[b, h], x, first, n, True)
        for i in range(first, n):
            _normalise(x[i], row_normal[i])
        _rows_product(row_normal, hidden_t[b], hidden, first, n, False)
        for i in range(first, n):
            row = hidden[i]
            for k in range(row.shape[0]):
                row[k] += hidden_bias[b, k]
            _gelu_twice(row, weights, bits)
        _rows_product(hidden, out_t[b], x, first, n, True)
        for i in range(first, n):
            for k in range(d):
                x[i, k] += out_bias[b, k]
    _normalise(x[n - 1], result)
    for k in range(d):
        result[k] = result[k] * final_w[k] + final_b[k]


@numba.njit(cache=True, fastmath=FAST, nogil=True)
def _gelu_twice(x, exponent, bits):
    """x (1 + tanh(y)), y = sqrt(2/pi) (x + 0.044715 x^3), as 2x / (1 + e^(-2y)), in place;
    ``exponent``: float32 scratch as long as x."""
    count = x.shape[0]
    for k in range(count):
        v = x[k]
        exponent[k] = np.float32(-2.0) * v * (GELU_SCALE + GELU_CUBIC * v * v)
    exp_in_place(exponent, count, bits)
    for k in range(count):
        x[k] = np.float32(2.0) * x[k] / (np.float32(1.0) + exponent[k])


@numba.njit(cache=True, fastmath=FAST, nogil=True)
def last_states(codes, offsets, items, positions, input_scale, scores_t, score_bias, values_t, value_bias,
                hidden_t, hidden_bias, out_t, out_bias, final_w, final_b):
    """(histories, d) float32: the network's output at each history's last title. History h is
    ``codes[offsets[h]:offsets[h+1]]`` (known codes, oldest first, at most ``len(positions)``);
    an empty one gives zeros. Input row i is items[code_i] * input_scale + positions[recency_i]
    (recency 0 = the most recent title)."""
    users = offsets.shape[0] - 1
    max_length, d = positions.shape
    width = hidden_t.shape[1] if hidden_t.shape[0] else d
    out = np.zeros((users, d), np.float32)
    x = np.empty((max_length, d), np.float32)
    normal = np.empty((max_length, d), np.float32)
    query, mixed = np.empty((max_length, d), np.float32), np.empty((max_length, d), np.float32)
    row_normal, hidden = np.empty((max_length, d), np.float32), np.empty((max_length, width), np.float32)
    weights = np.empty(max(max_length, width), np.float32)  # a row's softmax, then its GELU's exponents
    bits = np.empty(max(max_length, width), np.int32)
    for user in range(users):
        start, end = offsets[user], offsets[user + 1]
        n = end - start
        if n == 0:
            continue
        for i in range(n):
            item = items[codes[start + i]]
            position = positions[n - 1 - i]
            for k in range(d):
                x[i, k] = item[k] * input_scale + position[k]
        _forward(x[:n], scores_t, score_bias, values_t, value_bias, hidden_t, hidden_bias, out_t, out_bias,
                 final_w, final_b, out[user], normal[:n], query, weights, mixed, row_normal, hidden, bits)
    return out


# -- the blend -------------------------------------------------------------------------------------

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
