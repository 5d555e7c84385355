"""The sequence network's weights, rearranged once at load so that a request does little work;
``kernels.py`` runs the network on them.

Each rearrangement is exact in real arithmetic (float32 rounding differs in the last bits;
tests/test_sequence_model.py holds the scores to the PyTorch network's):

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
- GELU's factor 1/2 goes into the weights that read it (exact: a power of two).
- Blocks are stacked into one array per kind and every matrix is stored transposed (outputs x
  inputs): the layout the compiled loops read fastest.
"""

from __future__ import annotations

import math

import numpy as np

from . import kernels

BLOCK_ARRAYS = ("ln1_w", "ln1_b", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo",
                "ln2_w", "ln2_b", "w1", "b1", "w2", "b2")


class FoldedNetwork:
    """A network's blocks rearranged (module docstring), with what ``kernels.last_states``
    reads: ``scores_t`` (blocks, heads, d, d: M per head, transposed), ``score_bias`` (u),
    ``values_t`` (Wv Wo per head, transposed), ``value_bias``, ``hidden_t``/``hidden_bias``
    (W1 after the second layer norm), ``out_t``/``out_bias`` (W2 / 2); all float32."""

    def __init__(self, blocks: list[dict[str, np.ndarray]], heads: int, dim: int,
                 final_w: np.ndarray, final_b: np.ndarray):
        folded = [_fold(block, heads) for block in blocks]

        def stacked(name: str, shape: tuple) -> np.ndarray:
            parts = [part[name] for part in folded]
            return np.ascontiguousarray(np.stack(parts) if parts else np.zeros((0, *shape)), dtype=np.float32)

        self.scores_t = stacked("scores_t", (heads, dim, dim))
        self.score_bias = stacked("score_bias", (heads, dim))
        self.values_t = stacked("values_t", (heads, dim, dim))
        self.value_bias = stacked("value_bias", (dim,))
        self.hidden_t = stacked("hidden_t", (dim, dim))
        self.hidden_bias = stacked("hidden_bias", (dim,))
        self.out_t = stacked("out_t", (dim, dim))
        self.out_bias = stacked("out_bias", (dim,))
        self.final_w = np.ascontiguousarray(final_w, dtype=np.float32)
        self.final_b = np.ascontiguousarray(final_b, dtype=np.float32)

    def arrays(self) -> tuple:
        """The arrays in the order ``kernels.last_states`` takes them after its inputs."""
        return (self.scores_t, self.score_bias, self.values_t, self.value_bias, self.hidden_t, self.hidden_bias,
                self.out_t, self.out_bias, self.final_w, self.final_b)

    def last_states(self, codes: np.ndarray, offsets: np.ndarray, items: np.ndarray, positions: np.ndarray,
                    input_scale: float) -> np.ndarray:
        """(histories, d): the output at each history's last title; history h is
        ``codes[offsets[h]:offsets[h + 1]]`` (int64 codes inside the catalog, oldest first, at
        most ``len(positions)``)."""
        return kernels.last_states(codes, offsets, items, positions, np.float32(input_scale), *self.arrays())


def _fold(w: dict[str, np.ndarray], heads: int) -> dict[str, np.ndarray]:
    """One block's arrays (linear weights input x output) rearranged, in float64, rounded once."""
    w = {name: value.astype(np.float64) for name, value in w.items()}

    def after_norm(weight: str, bias: str, norm: str) -> tuple[np.ndarray, np.ndarray]:
        return w[f"{norm}_w"][:, None] * w[weight], w[f"{norm}_b"] @ w[weight] + w[bias]

    wq, bq = after_norm("wq", "bq", "ln1")
    wk, _ = after_norm("wk", "bk", "ln1")  # the key bias adds a constant per query: no effect
    wv, bv = after_norm("wv", "bv", "ln1")
    hidden, hidden_bias = after_norm("w1", "b1", "ln2")
    width = wq.shape[0] // heads
    heads_of = [slice(h * width, (h + 1) * width) for h in range(heads)]
    return {"scores_t": np.stack([(wq[:, h] @ wk[:, h].T / math.sqrt(width)).T for h in heads_of]),
            "score_bias": np.stack([bq[h] @ wk[:, h].T / math.sqrt(width) for h in heads_of]),
            "values_t": np.stack([(wv[:, h] @ w["wo"][h]).T for h in heads_of]),
            "value_bias": bv @ w["wo"] + w["bo"], "hidden_t": hidden.T, "hidden_bias": hidden_bias,
            "out_t": 0.5 * w["w2"].T, "out_bias": w["b2"]}
