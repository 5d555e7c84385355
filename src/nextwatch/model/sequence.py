"""The sequence model's scorer, in NumPy: what comes next after a user's recent titles, read by
a small causal self-attention network over the history (SASRec-style).

Training (``training/sequence_training.py``; the PyTorch form is ``training/network.py``)
produces the weights; serving and evaluation score with this module alone, so neither needs
PyTorch. The network:

    x_i  = E[h_i] * sqrt(d) + P[recency_i]       (recency 0 = the most recent title)
    for each block:  x = x + Attention(LN(x))  (causal: a title sees itself and earlier ones)
                     x = x + W2 GELU(W1 LN(x) + b1) + b2
    out  = LN(x_last);   score(t) = out . E[t]    (the input embeddings, shared)

Positions count back from the most recent title, so a history scores the same whatever its
length. ``attention.py`` rearranges the weights at load and ``kernels.py`` runs the network as
compiled loops, for one history (a request) or a batch (evaluation) alike.
"""

from __future__ import annotations

import numpy as np

from .attention import BLOCK_ARRAYS, FoldedNetwork
from .kernels import score_moments

__all__ = ["BLOCK_ARRAYS", "SequenceModel"]


class SequenceModel:
    """Weights as float32 arrays: ``items`` (titles x d), ``positions`` (max_length x d),
    ``out_w``/``out_b`` (the final layer norm) and per block ``block{i}.{name}`` for the names
    of ``BLOCK_ARRAYS`` (linear weights stored input x output)."""

    def __init__(self, arrays: dict[str, np.ndarray], heads: int = 1):
        self.arrays = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in arrays.items()}
        self.items = self.arrays["items"]
        self.positions = self.arrays["positions"]
        self.blocks = []
        index = 0
        while f"block{index}.wq" in self.arrays:
            self.blocks.append({name: self.arrays[f"block{index}.{name}"] for name in BLOCK_ARRAYS})
            index += 1
        self.heads = int(heads)
        if self.dim % self.heads:
            raise ValueError(f"{self.heads} heads do not divide the model width {self.dim}")
        # Derived here, never stored: the published payload stays the arrays above.
        self._folded = FoldedNetwork(self.blocks, self.heads, self.dim, self.arrays["out_w"], self.arrays["out_b"])
        self._input_scale = np.float32(np.sqrt(self.dim))
        items = self.items.astype(np.float64)
        self._item_mean = items.mean(axis=0)  # the mean of all titles' scores is out . item_mean
        items -= self._item_mean
        self._item_scatter = items.T @ items  # their squared deviations from it add up to out' C out
        # What the compiled blend (``kernels.blend_parts``) reads, in its argument order.
        self.kernel_inputs = (self.items, self._item_mean, self._item_scatter, self.positions, self._input_scale,
                              self._folded.arrays())

    @property
    def title_count(self) -> int:
        return len(self.items)

    @property
    def dim(self) -> int:
        return self.items.shape[1]

    @property
    def max_length(self) -> int:
        return len(self.positions)

    # -- scoring ---------------------------------------------------------------------------------
    def state(self, history: np.ndarray) -> np.ndarray:
        """(d,) float32: the network's output at the most recent title of ``history`` (codes,
        oldest first; its last ``max_length`` known titles). An empty history, or one of titles
        all unknown to the model, gives zeros (every title scores 0)."""
        history = np.asarray(history, dtype=np.int64)
        return self.state_of_known(history[(history >= 0) & (history < self.title_count)])

    def state_of_known(self, history: np.ndarray) -> np.ndarray:
        """``state`` of a history of codes all inside the catalog (int64)."""
        recent = np.ascontiguousarray(history[-self.max_length:], dtype=np.int64)
        return self._folded.last_states(recent, np.array([0, len(recent)], dtype=np.int64), self.items,
                                        self.positions, self._input_scale)[0]

    def scores(self, history: np.ndarray) -> np.ndarray:
        """float32 scores of every title as the next after ``history`` (codes, oldest first)."""
        return self.items @ self.state(history)

    def last_states(self, histories) -> np.ndarray:
        """(users, d): ``state`` of each history, in one compiled call."""
        recent = []
        for history in histories:
            history = np.asarray(history, dtype=np.int64)
            recent.append(history[(history >= 0) & (history < self.title_count)][-self.max_length:])
        offsets = np.zeros(len(recent) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in recent], out=offsets[1:])
        codes = np.concatenate(recent) if recent else np.zeros(0, dtype=np.int64)
        return self._folded.last_states(codes, offsets, self.items, self.positions, self._input_scale)

    def batch_scores(self, histories) -> np.ndarray:
        """(users, titles) scores, one row per history."""
        return self.last_states(histories) @ self.items.T

    def score_moments(self, state: np.ndarray, excluded: np.ndarray) -> tuple[float, float]:
        """Sum and sum of squares, about the mean score of all titles, of the scores
        ``items @ state`` of every title but the ``excluded`` codes (distinct, known), without
        scoring the catalog (``kernels.score_moments``, which the blend computes with)."""
        total, squares = score_moments(state.astype(np.float32), self.items, self._item_mean, self._item_scatter,
                                       np.asarray(excluded, dtype=np.int64))
        return total, max(squares, 0.0)

    # -- serialisation (the model store writes these bytes) -----------------------------------------
    def to_payload(self) -> tuple[dict[str, bytes], dict[str, str]]:
        arrays = {name: value.tobytes() for name, value in self.arrays.items()}
        shapes = ";".join(f"{name}={'x'.join(map(str, value.shape))}" for name, value in self.arrays.items())
        return arrays, {"heads": str(self.heads), "shapes": shapes}

    @classmethod
    def from_payload(cls, arrays: dict[str, bytes], meta: dict[str, str]) -> "SequenceModel":
        loaded = {}
        for entry in meta["shapes"].split(";"):
            name, shape = entry.split("=")
            loaded[name] = np.frombuffer(arrays[name], dtype=np.float32).reshape([int(s) for s in shape.split("x")])
        return cls(loaded, heads=int(meta["heads"]))

    @classmethod
    def random(cls, title_count: int, dim: int = 16, blocks: int = 2, max_length: int = 50,
               heads: int = 1, seed: int = 0) -> "SequenceModel":
        """Random weights of the right shapes: for tests of the code around the model."""
        rng = np.random.default_rng(seed)
        arrays = {"items": rng.normal(0, 0.1, (title_count, dim)), "positions": rng.normal(0, 0.1, (max_length, dim)),
                  "out_w": np.ones(dim), "out_b": np.zeros(dim)}
        for index in range(blocks):
            for name in BLOCK_ARRAYS:
                shape = (dim, dim) if name.startswith("w") else (dim,)
                value = np.ones(dim) if name.endswith("_w") else rng.normal(0, 0.2, shape)
                arrays[f"block{index}.{name}"] = value
        return cls(arrays, heads=heads)
