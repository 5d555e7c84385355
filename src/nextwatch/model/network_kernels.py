"""The sequence network's forward pass as compiled loops (numba), for one history or many.

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
same scores on the same machine. Compiled code is cached next to this file (``cache=True``), so a
process pays the compile (seconds) only the first time; ``warm_up`` does it at start-up.
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
    for four dot products (27% less time for a 50-title history than one row at a time)."""
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
