"""The sequence network's arithmetic for one history, rearranged to be cheap per request.

A request's network is a few dozen products of small matrices (at most 50 x 64), where each
NumPy call costs about a microsecond whatever it computes, so the weights are rearranged once,
at load, into fewer and larger steps. Each rearrangement is exact in real arithmetic (float32
rounding differs in the last bits; tests/test_sequence_model.py holds it to the PyTorch network):

- A layer norm's scale and shift are folded into the weights that read its output, so the
  network normalises only ((x - mean) / std), and every title's layer norm costs no more.
- Attention: with A the first layer norm's output, head h scores query i against key j by
  (A_i Wq + bq) . (A_j Wk + bk). The terms that depend on i alone are the same for every key
  and cancel in the softmax, which leaves (A_i M + u) . A_j with M = Wq Wk' / sqrt(d_head) and
  u = bq Wk' / sqrt(d_head): one product for queries and keys together. The softmax weights of
  a row add up to 1, so the values and the output projection become one matrix too:
  sum_j p_ij (A_j Wv + bv) Wo + bo = (sum_j p_ij A_j) (Wv Wo) + (bv Wo + bo).
- Only the most recent title's output is scored, so the last block computes attention and the
  feed-forward layer for that one row (its keys still come from every title).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

LAYER_NORM_EPSILON = np.float32(1e-5)
BLOCK_ARRAYS = ("ln1_w", "ln1_b", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo",
                "ln2_w", "ln2_b", "w1", "b1", "w2", "b2")
GELU_SCALE = np.float32(math.sqrt(2.0 / math.pi))
GELU_CUBIC = np.float32(math.sqrt(2.0 / math.pi) * 0.044715)


@dataclasses.dataclass(frozen=True)
class FoldedBlock:
    """One block's weights, rearranged (module docstring); per head: ``scores`` (M),
    ``score_bias`` (u), ``values`` (Wv Wo), all float32."""

    scores: list[np.ndarray]
    score_bias: list[np.ndarray]
    values: list[np.ndarray]
    value_bias: np.ndarray
    hidden: np.ndarray
    hidden_bias: np.ndarray
    out: np.ndarray
    out_bias: np.ndarray
    mean_weights: np.ndarray  # (d, 1) of 1/d: the rows' means as one matrix product
    ones: np.ndarray  # (max_length, 1) of 1: the rows' sums of attention weights likewise

    @classmethod
    def from_arrays(cls, w: dict[str, np.ndarray], heads: int, max_length: int) -> "FoldedBlock":
        w = {name: value.astype(np.float64) for name, value in w.items()}  # fold in float64, round once

        def after_norm(weight: str, bias: str, norm: str) -> tuple[np.ndarray, np.ndarray]:
            return w[f"{norm}_w"][:, None] * w[weight], w[f"{norm}_b"] @ w[weight] + w[bias]

        wq, bq = after_norm("wq", "bq", "ln1")
        wk, _ = after_norm("wk", "bk", "ln1")  # the key bias adds a constant per query: no effect
        wv, bv = after_norm("wv", "bv", "ln1")
        hidden, hidden_bias = after_norm("w1", "b1", "ln2")
        dim = wq.shape[0]
        width = dim // heads
        heads_of = [slice(h * width, (h + 1) * width) for h in range(heads)]
        f32 = np.float32
        return cls(scores=[(wq[:, h] @ wk[:, h].T / math.sqrt(width)).astype(f32) for h in heads_of],
                   score_bias=[(bq[h] @ wk[:, h].T / math.sqrt(width)).astype(f32) for h in heads_of],
                   values=[(wv[:, h] @ w["wo"][h]).astype(f32) for h in heads_of],
                   value_bias=(bv @ w["wo"] + w["bo"]).astype(f32),
                   hidden=np.ascontiguousarray(hidden, dtype=f32), hidden_bias=hidden_bias.astype(f32),
                   # GELU's factor 1/2 goes into the weights that read it (exact: a power of two).
                   out=np.ascontiguousarray(0.5 * w["w2"], dtype=f32), out_bias=w["b2"].astype(f32),
                   mean_weights=mean_weights(dim), ones=np.ones((max_length, 1), dtype=f32))


def mean_weights(dim: int) -> np.ndarray:
    return np.full((dim, 1), 1.0 / dim, dtype=np.float32)


def last_state(x: np.ndarray, blocks: list[FoldedBlock], causal: np.ndarray, out_w: np.ndarray,
               out_b: np.ndarray, means: np.ndarray) -> np.ndarray:
    """The network's output (d,) at the last row of ``x`` (titles x d, oldest first: the input
    embeddings plus positions). ``causal``: 0 on and below the diagonal, -inf above; ``means``:
    ``mean_weights(d)``."""
    for block in blocks[:-1]:
        normal = _normalised(x, block.mean_weights)
        x = _attend(block, normal, normal, x, causal)
        _feed_forward(block, x)
    if blocks:
        last = blocks[-1]
        normal = _normalised(x, last.mean_weights)
        x = _attend(last, normal, normal[-1:], x[-1:], None)
        _feed_forward(last, x)
    out = _normalised(x[-1:], means)[0]
    out *= out_w
    out += out_b
    return out


def _attend(block: FoldedBlock, keys: np.ndarray, queries: np.ndarray, residual: np.ndarray,
            mask: np.ndarray | None) -> np.ndarray:
    """``residual`` plus attention of the ``queries`` rows over the ``keys`` rows (both
    normalised, no scale or shift)."""
    out = residual + block.value_bias
    for scores, score_bias, values in zip(block.scores, block.score_bias, block.values):
        logits = queries @ scores
        logits += score_bias
        logits = logits @ keys.T
        if mask is not None:
            logits += mask
        logits -= np.maximum.reduce(logits, axis=1, keepdims=True)
        np.exp(logits, out=logits)
        mixed = logits @ keys
        mixed /= logits @ block.ones[: len(keys)]  # each row's sum, as a product: cheaper than a reduction
        out += mixed @ values
    return out


def _feed_forward(block: FoldedBlock, x: np.ndarray) -> None:
    """x += W2 GELU(W1 LN(x) + b1) + b2, in place."""
    hidden = _normalised(x, block.mean_weights) @ block.hidden
    hidden += block.hidden_bias
    _gelu_in_place(hidden)
    x += hidden @ block.out
    x += block.out_bias


def _normalised(x: np.ndarray, mean_weights: np.ndarray) -> np.ndarray:
    """(x - mean) / sqrt(variance + eps) along each row: a layer norm without scale or shift."""
    centred = x - x @ mean_weights
    spread = (centred * centred) @ mean_weights
    spread += LAYER_NORM_EPSILON
    np.sqrt(spread, out=spread)
    centred /= spread
    return centred


def _gelu_in_place(x: np.ndarray) -> None:
    """Twice GELU in its tanh form, as torch.nn.GELU(approximate="tanh") computes it in training:
    x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (``FoldedBlock.out`` holds the factor 1/2)."""
    inner = x * x
    inner *= GELU_CUBIC
    inner += GELU_SCALE
    inner *= x
    np.tanh(inner, out=inner)
    inner += np.float32(1.0)
    x *= inner
