"""The sequence network's training losses: what one batch of positions costs in cross-entropy.

- ``full``: a softmax over every title. Exact, and what the literature finds best for SASRec-style
  networks (Klenitskiy & Vasilev, RecSys 2023; Petrov & Macdonald, RecSys 2023), but each batch
  costs positions x titles, so its time grows with the catalog.
- ``sampled``: the target against ``negatives`` titles drawn for the batch (one draw shared by
  every position, so the negatives' logits are one matrix product). Its cost grows with the
  negatives instead of the catalog.

``auto`` (the default setting) takes the full loss below ``SAMPLED_FROM_TITLES`` titles and the
sampled one from there on (``chosen_loss``).

PyTorch is passed in (``torch``) or imported when a loss is built: serving never imports this.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np

from ..settings import SEQUENCE_LOSSES as LOSSES

AUTO, FULL, SAMPLED = LOSSES

# From this many titles on, ``auto`` trains with the sampled loss: where a batch with the full
# softmax costs 1.5x one with the default 3,000 negatives (shipped network: 64-dim, 2 blocks, 50
# positions, batches of 128). Measured on 2026-12-03 on this 2-core machine, shared (load 1.5-4):
#     .venv/bin/python bench/sequence_loss.py
#     .venv/bin/python bench/sequence_loss.py --titles 4000 6000 8000 10000 12000 14000 --rounds 5
# crossing at about 7,900 and 8,200 titles (interpolated; at 8,000 titles 1.51x and 1.45x, at
# 10,000 1.89x and 1.97x, at 100,000 15.8x); figures in BENCHMARKS.md, "Sampled or full
# softmax". Below it sampling saves too little time to pay for its noisier gradient; above it,
# on Amazon Beauty (12,101 titles), the network alone reached .0675 NDCG@10 on the holdout with
# the sampled loss against .0685 with the full one (seed 0, both best at epoch 9).
SAMPLED_FROM_TITLES = 8_000

# A loss of one batch: (states (positions x dim), items (titles x dim), labels (positions,)) -> mean.
BatchLoss = Callable[..., object]


def chosen_loss(setting: str, title_count: int) -> str:
    """``full`` or ``sampled``: the setting itself, or for ``auto`` the one the catalog's size calls for."""
    if setting not in LOSSES:
        raise ValueError(f"the sequence loss must be one of {', '.join(LOSSES)}, got {setting!r}")
    if setting != AUTO:
        return setting
    return SAMPLED if title_count >= SAMPLED_FROM_TITLES else FULL


def loss_record(setting: str, negatives: int, title_count: int) -> dict:
    """The loss a training over ``title_count`` titles uses, as its report and the model's
    metadata keep it: ``{"loss": "full"}`` or ``{"loss": "sampled", "negatives": 3000}``, with
    ``"setting": "auto"`` when auto chose it."""
    kind = chosen_loss(setting, title_count)
    record = {"loss": kind}
    if kind == SAMPLED:
        record["negatives"] = min(negatives, max(title_count - 1, 1))
    if setting == AUTO:
        record["setting"] = AUTO
    return record


def batch_loss(kind: str, title_count: int, negatives: int, seed: int) -> BatchLoss:
    """The loss a training applies to every batch: the full softmax, or the sampled one drawing its
    negatives from a generator of its own (seeded: the same seed draws the same negatives, and
    the batches' order and dropout draw nothing less or more than with the full loss)."""
    import torch

    if kind == FULL:
        return full_softmax_loss(torch).apply
    if kind != SAMPLED:
        raise ValueError(f"the sequence loss must be {FULL} or {SAMPLED} here, got {kind!r}")
    draw = NegativeSampler(title_count, negatives, seed)
    sampled = sampled_softmax_loss(torch)
    # The negatives go where the network is (a GPU's training has its items there).
    return lambda states, items, labels: sampled.apply(states, items, labels, draw().to(items.device))


class NegativeSampler:
    """The titles a batch's positions are contrasted with: ``negatives`` distinct codes drawn
    uniformly, sorted; every title when that many would leave at most one out.

    Why uniform, not by popularity with a logQ correction: the sampled loss below corrects a
    uniform draw exactly (each negative stands for (titles - 1) / drawn of the others), and with
    thousands of negatives a uniform draw already holds the popular titles in proportion.
    Drawing by popularity gives harder negatives, which matters with few of them (in-batch
    negatives, Yi et al., RecSys 2019), but its logQ correction is only approximate when the
    target is not itself drawn (Khrylchenko et al., 2025), and it spends many of the draws on the
    same few head titles. Klenitskiy & Vasilev (RecSys 2023) draw SASRec's negatives uniformly,
    without replacement, and train their sampled variant with 3,000 of them (the default of
    NEXTWATCH_SEQUENCE_NEGATIVES). They draw per user; one draw per batch here, so that the
    negatives' logits are one matrix product."""

    def __init__(self, title_count: int, negatives: int, seed: int):
        if negatives < 1:
            raise ValueError(f"the sampled loss needs at least 1 negative, got {negatives}")
        self.title_count = title_count
        self.negatives = negatives
        self.everything = negatives >= title_count - 1
        self.rng = np.random.default_rng(seed)

    def __call__(self):
        import torch

        if self.everything:
            return torch.arange(self.title_count)
        drawn = self.rng.choice(self.title_count, self.negatives, replace=False, shuffle=False)
        return torch.from_numpy(np.sort(drawn))


@functools.cache
def full_softmax_loss(torch):
    """Mean cross-entropy of a softmax over every title, as one autograd step. The same figure
    and gradients as ``F.cross_entropy(states @ items.T, labels)`` (to 1e-9 here), without its
    intermediate arrays: those are positions x titles, where the epoch's time goes (on Amazon
    Beauty 12,101 titles against a width of 64); the backward pass turns the saved logits into
    the softmax in place. Measured here: 25% less time for this step."""

    class FullSoftmaxLoss(torch.autograd.Function):
        @staticmethod
        def forward(ctx, states, items, labels):
            logits = states @ items.T
            norm = torch.logsumexp(logits, dim=1)
            ctx.save_for_backward(states, items, labels, logits, norm)
            return (norm - logits.gather(1, labels[:, None])[:, 0]).mean()

        @staticmethod
        def backward(ctx, grad):
            states, items, labels, logits, norm = ctx.saved_tensors
            gradient = logits.sub_(norm[:, None]).exp_()  # the softmax
            gradient[torch.arange(len(labels), device=labels.device), labels] -= 1.0
            gradient.mul_(grad / len(labels))
            return gradient @ items, gradient.T @ states, None

    return FullSoftmaxLoss


@functools.cache
def sampled_softmax_loss(torch):
    """Mean cross-entropy of each position's target against the batch's sorted ``negatives``.

    A negative that is the position's own target (an accidental hit) is left out of that
    position's softmax. The kept negatives, m of them, are a uniform sample of the titles - 1
    other titles, so each stands for (titles - 1) / m of them: their logits get log((titles - 1)
    / m) added, which makes the softmax's denominator an unbiased estimate of the full one. The
    target is not corrected: it is always there, not drawn (Khrylchenko et al., "Correcting the
    LogQ Correction", 2025). Without the correction the negatives' part of the denominator is
    understated about titles / negatives times, so the target's probability is overstated: the
    over-confidence Petrov & Macdonald (RecSys 2023) trace sampled-negative training's losses
    to. With every title as a negative the correction is 0 and this is the full softmax's
    cross-entropy, value and gradients (tested).

    One autograd step, as the full loss: the positions x negatives logits are the only large
    array, turned into the softmax in place by the backward pass."""

    class SampledSoftmaxLoss(torch.autograd.Function):
        @staticmethod
        def forward(ctx, states, items, labels, negatives):
            title_count, drawn = items.shape[0], len(negatives)
            candidates = items.index_select(0, negatives)
            targets = items.index_select(0, labels)
            positive = (states * targets).sum(1)
            logits = states @ candidates.T
            slot = torch.searchsorted(negatives, labels).clamp_(max=drawn - 1)
            hit = negatives[slot] == labels
            kept = (drawn - hit.to(states.dtype)).clamp_(min=1.0)
            logits.add_(torch.log((title_count - 1) / kept)[:, None])
            hit_rows = torch.nonzero(hit)[:, 0]
            logits[hit_rows, slot[hit_rows]] = -math.inf
            norm = torch.logaddexp(positive, torch.logsumexp(logits, dim=1))
            ctx.save_for_backward(states, candidates, targets, labels, negatives, logits, norm, positive)
            ctx.title_count = title_count
            return (norm - positive).mean()

        @staticmethod
        def backward(ctx, grad):
            states, candidates, targets, labels, negatives, logits, norm, positive = ctx.saved_tensors
            scale = grad / len(labels)
            drawn_gradient = logits.sub_(norm[:, None]).exp_().mul_(scale)  # the negatives' softmax
            target_gradient = (torch.exp(positive - norm) - 1.0).mul_(scale)[:, None]
            states_gradient = drawn_gradient @ candidates + target_gradient * targets
            items_gradient = states.new_zeros((ctx.title_count, states.shape[1]))
            items_gradient.index_add_(0, negatives, drawn_gradient.T @ states)
            items_gradient.index_add_(0, labels, target_gradient * states)
            return states_gradient, items_gradient, None, None

    return SampledSoftmaxLoss
