"""The sequence model's scorer, in NumPy: what comes next after a user's recent titles, read by
a small causal self-attention network over the history (SASRec-style).

Training (``training/sequence.py``, PyTorch) produces the weights; serving and evaluation
score with this module alone, so neither needs PyTorch. The network:

    x_i  = E[h_i] * sqrt(d) + P[recency_i]       (recency 0 = the most recent title)
    for each block:  x = x + Attention(LN(x))  (causal: a title sees itself and earlier ones)
                     x = x + W2 GELU(W1 LN(x) + b1) + b2
    out  = LN(x_last);   score(t) = out . E[t]    (the input embeddings, shared)

Positions count back from the most recent title, so a history scores the same whatever it is
padded to: a batch pads on the left, and the padding is masked out of every attention.
"""

from __future__ import annotations

import math

import numpy as np

LAYER_NORM_EPSILON = 1e-5
BLOCK_ARRAYS = ("ln1_w", "ln1_b", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo",
                "ln2_w", "ln2_b", "w1", "b1", "w2", "b2")


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
        self._input_scale = np.float32(math.sqrt(self.dim))

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
    def scores(self, history: np.ndarray) -> np.ndarray:
        """float32 scores of every title as the next after ``history`` (codes, oldest first)."""
        return self.batch_scores([history])[0]

    def batch_scores(self, histories) -> np.ndarray:
        """(users, titles) scores, one row per history."""
        return self.last_states(histories) @ self.items.T

    def last_states(self, histories) -> np.ndarray:
        """(users, d): the network's output at each history's most recent title. An empty
        history, or one of titles all unknown to the model, gives zeros (every title scores 0)."""
        length = self.max_length
        recent = [self._known(h)[-length:] for h in histories]
        width = max((len(h) for h in recent), default=0)
        states = np.zeros((len(recent), self.dim), dtype=np.float32)
        if width == 0:
            return states
        codes = np.zeros((len(recent), width), dtype=np.int64)
        present = np.zeros((len(recent), width), dtype=bool)
        for row, history in enumerate(recent):
            if len(history):
                codes[row, width - len(history):] = history
                present[row, width - len(history):] = True
        x = self.items[codes] * self._input_scale + self.positions[np.arange(width)[::-1]][None]
        x *= present[..., None]
        # A title attends to itself and to the titles before it that are not padding.
        allowed = np.tril(np.ones((width, width), dtype=bool))[None] & present[:, None, :]
        allowed |= np.eye(width, dtype=bool)[None]
        for index, block in enumerate(self.blocks):
            last_only = index == len(self.blocks) - 1  # the last block: only the last title's output is used
            x = self._block(x, block, allowed, present, last_only)
        out = _layer_norm(x[:, -1], self.arrays["out_w"], self.arrays["out_b"])
        has_any = present.any(axis=1)
        out[~has_any] = 0.0
        return out

    def _known(self, history) -> np.ndarray:
        history = np.asarray(history, dtype=np.int64)
        return history[(history >= 0) & (history < self.title_count)]

    def _block(self, x, w, allowed, present, last_only: bool) -> np.ndarray:
        h = _layer_norm(x, w["ln1_w"], w["ln1_b"])
        queries_from = h[:, -1:] if last_only else h
        q = queries_from @ w["wq"] + w["bq"]
        k = h @ w["wk"] + w["bk"]
        v = h @ w["wv"] + w["bv"]
        mask = allowed[:, -1:] if last_only else allowed
        attended = self._attention(q, k, v, mask)
        residual = x[:, -1:] if last_only else x
        y = residual + attended @ w["wo"] + w["bo"]
        hidden = _gelu(_layer_norm(y, w["ln2_w"], w["ln2_b"]) @ w["w1"] + w["b1"])
        y = y + hidden @ w["w2"] + w["b2"]
        return y * (present[:, -1:] if last_only else present)[..., None]

    def _attention(self, q, k, v, mask) -> np.ndarray:
        users, queries, dim = q.shape
        heads, head_dim = self.heads, dim // self.heads
        q = q.reshape(users, queries, heads, head_dim).transpose(0, 2, 1, 3)
        k = k.reshape(users, -1, heads, head_dim).transpose(0, 2, 1, 3)
        v = v.reshape(users, -1, heads, head_dim).transpose(0, 2, 1, 3)
        logits = (q @ k.transpose(0, 1, 3, 2)) / np.float32(math.sqrt(head_dim))
        logits = np.where(mask[:, None], logits, np.float32(-1e30))
        logits -= logits.max(axis=-1, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(axis=-1, keepdims=True)
        return (weights @ v).transpose(0, 2, 1, 3).reshape(users, queries, dim)

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


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    variance = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(variance + np.float32(LAYER_NORM_EPSILON)) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    """GELU in its tanh form, as torch.nn.GELU(approximate="tanh") computes it in training."""
    return 0.5 * x * (1.0 + np.tanh(np.float32(math.sqrt(2.0 / math.pi)) * (x + np.float32(0.044715) * x * x * x)))
