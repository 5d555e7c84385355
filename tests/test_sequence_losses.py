"""The sequence network's losses (training/losses.py): the sampled loss with every title as a
negative is the full softmax's cross-entropy; with fewer, its corrected denominator estimates the
full one without bias; ``auto`` picks by the catalog's size; a training with the sampled loss is
repeatable for a seed, learns, and says in its report which loss it used."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from nextwatch.evaluation.ranking_metrics import rank_block, summarise
from nextwatch.settings import Settings
from nextwatch.training.losses import (SAMPLED_FROM_TITLES, NegativeSampler, batch_loss, chosen_loss, loss_record,
                                       full_softmax_loss, sampled_softmax_loss)
from nextwatch.training.sequence_training import SequenceOptions, options_from, train_sequence_model

SMALL = SequenceOptions(dim=16, blocks=2, heads=2, dropout=0.0, max_length=8, seed=3)
TITLES = 300


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(40, 16, generator=generator, dtype=torch.float64)
    items = 0.3 * torch.randn(TITLES, 16, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, TITLES, (40,), generator=generator)
    return states, items, labels


def value_and_gradients(loss_of, states, items):
    states, items = states.clone().requires_grad_(), items.clone().requires_grad_()
    loss = loss_of(states, items)
    (3.0 * loss).backward()  # a scale from above reaches both gradients
    return loss.item(), states.grad, items.grad


def test_the_full_loss_is_cross_entropy_with_its_gradients(batch):
    states, items, labels = batch
    plain = value_and_gradients(lambda s, i: torch.nn.functional.cross_entropy(s @ i.T, labels), states, items)
    fused = value_and_gradients(lambda s, i: full_softmax_loss(torch).apply(s, i, labels), states, items)
    assert fused[0] == pytest.approx(plain[0], abs=1e-12)
    assert torch.allclose(fused[1], plain[1], atol=1e-12) and torch.allclose(fused[2], plain[2], atol=1e-12)


@pytest.mark.parametrize("negatives", [TITLES - 1, TITLES, 10 * TITLES])
def test_the_sampled_loss_with_every_title_as_a_negative_is_the_full_loss(batch, negatives):
    states, items, labels = batch
    drawn = NegativeSampler(TITLES, negatives, seed=1)()
    assert drawn.tolist() == list(range(TITLES))  # every title, each row's target among them: a hit in every row
    plain = value_and_gradients(lambda s, i: torch.nn.functional.cross_entropy(s @ i.T, labels), states, items)
    sampled = value_and_gradients(lambda s, i: sampled_softmax_loss(torch).apply(s, i, labels, drawn), states, items)
    assert sampled[0] == pytest.approx(plain[0], abs=1e-12)
    assert torch.allclose(sampled[1], plain[1], atol=1e-12) and torch.allclose(sampled[2], plain[2], atol=1e-12)


def test_fewer_negatives_estimate_the_full_denominator_without_bias(batch):
    """exp(loss) of one position is its softmax denominator over exp(target's logit): corrected
    for what the draw left out, its mean over draws is the full one's (accidental hits included:
    30 of 300 titles hit the target in a tenth of the draws)."""
    states, items, labels = batch
    sampler = NegativeSampler(TITLES, 30, seed=2)
    loss = sampled_softmax_loss(torch)
    for row in (0, 1):
        position = slice(row, row + 1)
        full = torch.nn.functional.cross_entropy(states[position] @ items.T, labels[position]).exp().item()
        draws = np.array([loss.apply(states[position], items, labels[position], sampler()).exp().item()
                          for _ in range(1500)])
        assert abs(draws.mean() - full) < 4 * draws.std() / np.sqrt(len(draws))
        # Without the correction the denominator would hold about a tenth of the negatives' mass.
        assert draws.mean() > 0.5 * full


def test_an_accidental_hit_is_left_out_of_its_own_row(batch):
    states, items, labels = batch
    drawn = torch.tensor(sorted({int(labels[0]), 7, 100, 250}))  # row 0's target among the negatives
    got = value_and_gradients(lambda s, i: sampled_softmax_loss(torch).apply(s[:1], i, labels[:1], drawn),
                              states, items)
    others = drawn[drawn != labels[0]]
    correction = np.log((TITLES - 1) / len(others))
    logits = states[0] @ items.T
    expected = torch.logaddexp(logits[labels[0]], torch.logsumexp(logits[others] + correction, 0)) - logits[labels[0]]
    assert got[0] == pytest.approx(expected.item(), abs=1e-12)
    touched = got[2].abs().sum(1) > 0
    assert set(np.flatnonzero(touched.numpy())) == set(drawn.tolist())  # only the drawn titles and the target move


def test_a_seed_draws_the_same_negatives_and_another_seed_others():
    first, again, other = (NegativeSampler(50_000, 3000, seed) for seed in (5, 5, 6))
    for _ in range(3):
        drawn = first()
        assert torch.equal(drawn, again()) and not torch.equal(drawn, other())
        assert len(torch.unique(drawn)) == 3000 and torch.equal(drawn, torch.sort(drawn).values)
        assert 0 <= int(drawn.min()) and int(drawn.max()) < 50_000
    with pytest.raises(ValueError, match="at least 1 negative"):
        NegativeSampler(100, 0, seed=0)


def test_auto_picks_the_full_loss_below_the_threshold_and_the_sampled_one_from_it():
    assert chosen_loss("auto", SAMPLED_FROM_TITLES - 1) == "full"
    assert chosen_loss("auto", SAMPLED_FROM_TITLES) == "sampled"
    assert chosen_loss("full", 10 * SAMPLED_FROM_TITLES) == "full"
    assert chosen_loss("sampled", 20) == "sampled"
    with pytest.raises(ValueError, match="one of auto, full, sampled"):
        chosen_loss("softmax", 20)
    with pytest.raises(ValueError, match="full or sampled"):
        batch_loss("auto", 20, 5, seed=0)
    options = dataclasses.replace(SMALL, negatives=500)
    assert loss_record(options.loss, options.negatives, SAMPLED_FROM_TITLES - 1) == {"loss": "full", "setting": "auto"}
    assert loss_record(options.loss, options.negatives, SAMPLED_FROM_TITLES) == {"loss": "sampled", "negatives": 500,
                                                                                  "setting": "auto"}
    assert loss_record("sampled", options.negatives, 40) == {"loss": "sampled", "negatives": 39}


def test_the_settings_reach_the_training_options():
    options = options_from(Settings(sequence_loss="sampled", sequence_negatives=1234))
    assert (options.loss, options.negatives) == ("sampled", 1234)
    assert (options_from(Settings()).loss, options_from(Settings()).negatives) == ("auto", 3000)


def stride_histories(users: int, titles: int, seed: int):
    """Each user steps through the titles by a stride of their own (1, 2 or 3)."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, titles) + rng.integers(1, 4) * np.arange(rng.integers(4, 10))) % titles
            for _ in range(users)]


def popularity_ndcg(histories, targets, titles: int) -> float:
    counts = np.bincount(np.concatenate(histories), minlength=titles).astype(np.float64)
    ranks, shown = rank_block(np.tile(counts, (len(targets), 1)), histories, targets)
    return float(summarise(ranks, shown)["ndcg@10"])


def test_a_training_with_the_sampled_loss_learns_and_repeats_for_its_seed():
    titles = 60
    full = stride_histories(300, titles, seed=0)
    histories, targets = [h[:-1] for h in full], np.array([h[-1] for h in full])
    options = dataclasses.replace(SMALL, dim=32, batch_size=32, max_epochs=4, patience=4, learning_rate=1e-2,
                                  loss="sampled", negatives=10)  # 10 of the 59 other titles per batch
    model, report = train_sequence_model(histories, titles, options, holdout=(histories, targets))
    assert report.loss == {"loss": "sampled", "negatives": 10}
    assert max(report.holdout_ndcg) > 3 * popularity_ndcg(histories, targets, titles)
    assert report.holdout_ndcg[-1] > report.holdout_ndcg[0]
    again, again_report = train_sequence_model(histories, titles, options, holdout=(histories, targets))
    assert again_report.holdout_ndcg == report.holdout_ndcg
    assert all(np.array_equal(again.arrays[name], model.arrays[name]) for name in model.arrays)
