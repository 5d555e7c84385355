"""The sequence model's network in PyTorch, for training (``sequence_training.py``), and its
weights to and from ``SequenceModel``'s NumPy arrays, which serving and evaluation score without
PyTorch.

The two forms compute the same thing with the same arrays (tests/test_sequence_model.py holds
the scores to 1e-5): 64-dim title embeddings shared with the output layer, learned positions
counted back from the most recent title, pre-norm causal self-attention blocks.
PyTorch is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..model.sequence import SequenceModel

if TYPE_CHECKING:
    from .sequence_training import SequenceOptions


def torch_network(title_count: int, options: "SequenceOptions"):
    """The PyTorch form of ``SequenceModel``'s network (same arrays, same arithmetic)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            d = options.dim
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d) for _ in range(4))
            self.w1, self.w2 = nn.Linear(d, d), nn.Linear(d, d)
            self.drop = nn.Dropout(options.dropout)
            self.gelu = nn.GELU(approximate="tanh")

        def forward(self, x, allowed, present):
            users, width, d = x.shape
            heads = options.heads
            h = self.ln1(x)

            def split(t):
                return t.view(users, width, heads, d // heads).transpose(1, 2)

            attended = nn.functional.scaled_dot_product_attention(
                split(self.wq(h)), split(self.wk(h)), split(self.wv(h)), attn_mask=allowed,
                dropout_p=options.dropout if self.training else 0.0)
            x = x + self.drop(self.wo(attended.transpose(1, 2).reshape(users, width, d)))
            x = x + self.drop(self.w2(self.drop(self.gelu(self.w1(self.ln2(x))))))
            return x * present

    class Network(nn.Module):
        def __init__(self):
            super().__init__()
            d = options.dim
            self.items = nn.Embedding(title_count + 1, d, padding_idx=0)
            self.positions = nn.Embedding(options.max_length, d)
            nn.init.normal_(self.items.weight, std=0.05)
            nn.init.normal_(self.positions.weight, std=0.05)
            with torch.no_grad():
                self.items.weight[0].zero_()
            self.drop = nn.Dropout(options.dropout)
            self.blocks = nn.ModuleList(Block() for _ in range(options.blocks))
            self.out = nn.LayerNorm(d)
            self.scale = math.sqrt(d)

        def forward(self, inputs):
            """States at every position of left-padded ``inputs`` (codes + 1, 0 = padding)."""
            users, width = inputs.shape
            present = (inputs > 0).unsqueeze(-1)
            recency = torch.arange(width - 1, -1, -1, device=inputs.device)
            x = self.drop(self.items(inputs) * self.scale + self.positions(recency)) * present
            keys_present = (inputs > 0).unsqueeze(1)  # (users, 1, width)
            square = torch.ones(width, width, dtype=torch.bool, device=inputs.device)
            allowed = torch.tril(square).unsqueeze(0) & keys_present
            allowed = (allowed | torch.eye(width, dtype=torch.bool, device=inputs.device).unsqueeze(0)).unsqueeze(1)
            for block in self.blocks:
                x = block(x, allowed, present)
            return self.out(x)

    return Network()


def exported(network, options: "SequenceOptions") -> SequenceModel:
    """The network's weights as ``SequenceModel`` arrays (linear weights input x output)."""
    def array(tensor) -> np.ndarray:
        return tensor.detach().cpu().numpy().astype(np.float32)

    arrays = {"items": array(network.items.weight[1:]), "positions": array(network.positions.weight),
              "out_w": array(network.out.weight), "out_b": array(network.out.bias)}
    for index, block in enumerate(network.blocks):
        for norm in ("ln1", "ln2"):
            arrays[f"block{index}.{norm}_w"] = array(getattr(block, norm).weight)
            arrays[f"block{index}.{norm}_b"] = array(getattr(block, norm).bias)
        for part in ("q", "k", "v", "o", "1", "2"):
            linear = getattr(block, f"w{part}")
            arrays[f"block{index}.w{part}"] = array(linear.weight.T)
            arrays[f"block{index}.b{part}"] = array(linear.bias)
    return SequenceModel(arrays, heads=options.heads)


def load_weights(network, model: SequenceModel) -> None:
    """``model``'s arrays into ``network`` (the inverse of ``exported``): the final fit continues
    the network tuning trained instead of starting again."""
    import torch

    arrays = model.arrays
    if arrays["items"].shape != tuple(network.items.weight[1:].shape) or len(model.blocks) != len(network.blocks):
        raise ValueError(f"the starting network has {model.title_count} titles, width {model.dim} and "
                         f"{len(model.blocks)} blocks; this training needs {network.items.weight.shape[0] - 1}, "
                         f"{network.items.weight.shape[1]} and {len(network.blocks)}")

    def put(parameter, value: np.ndarray) -> None:
        parameter.copy_(torch.from_numpy(np.ascontiguousarray(value)))

    with torch.no_grad():
        put(network.items.weight[1:], arrays["items"])
        put(network.positions.weight, arrays["positions"])
        put(network.out.weight, arrays["out_w"])
        put(network.out.bias, arrays["out_b"])
        for index, block in enumerate(network.blocks):
            for norm in ("ln1", "ln2"):
                put(getattr(block, norm).weight, arrays[f"block{index}.{norm}_w"])
                put(getattr(block, norm).bias, arrays[f"block{index}.{norm}_b"])
            for part in ("q", "k", "v", "o", "1", "2"):
                linear = getattr(block, f"w{part}")
                put(linear.weight, arrays[f"block{index}.w{part}"].T)
                put(linear.bias, arrays[f"block{index}.b{part}"])
