"""Where the sequence network trains (training/engines.py, ranks.py, distributed.py): the shares of
a batch add up to the batch, the processes' averaged gradient is the whole batch's, the engine
the settings and the Spark session choose, and two real processes under TorchDistributor (local
mode, gloo) that train as one process does and stop together. The run on a standalone cluster is
in test_cluster_training.py."""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import pytest
import torch

from nextwatch.settings import load_settings
from nextwatch.training.engines import (LONG_TRAINING_POSITIONS, Engine, distributor_plan, engine_from_settings,
                                       training_device)
from nextwatch.training.losses import full_softmax_loss
from nextwatch.training.ranks import batch_share
from nextwatch.training.network import torch_network
from nextwatch.training.sequence_training import (TIME_CAP, SequenceOptions, padded_batch,
                                         train_sequence_model, training_sequences)

# No dropout: one process and two then draw nothing at random and must train alike.
OPTIONS = SequenceOptions(dim=16, blocks=2, heads=2, dropout=0.0, max_length=8, batch_size=32, max_epochs=6,
                          patience=2, learning_rate=1e-2, threads=1, seed=3)


def stride_histories(users: int, titles: int, seed: int):
    """Each user steps through the titles by a stride of their own: the order is what to learn."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, titles) + rng.integers(1, 4) * np.arange(rng.integers(3, 12))) % titles
            for _ in range(users)]


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_the_shares_of_a_batch_are_the_batch_once(world):
    lengths = np.array([2, 5, 9, 3, 7, 4, 6], dtype=np.int64)
    for batch in (np.array([6, 0, 3, 2, 5, 1, 4]), np.array([4, 1]), np.array([3])):
        shares = [batch_share(batch, lengths, rank, world) for rank in range(world)]
        trained = np.concatenate([rows for rows, factor in shares if factor > 0])
        assert sorted(trained.tolist()) == sorted(batch.tolist())
        # A process left without rows trains one with factor 0; the others' factors average to 1
        # weighted by their positions: W * P_r / P.
        assert sum(factor for _, factor in shares) / world == pytest.approx(1.0)
        assert all(len(rows) >= 1 for rows, _ in shares)


def test_the_averaged_gradient_of_the_shares_is_the_whole_batchs():
    """What DDP computes (the mean of each process's gradient, their losses scaled by
    batch_share) equals the gradient of the batch's mean loss in one process."""
    sequences = training_sequences(stride_histories(11, 23, seed=1), OPTIONS)  # at most max_length + 1
    lengths = np.array([len(s) for s in sequences])
    batch = np.arange(len(sequences))

    def gradients(rows, factor):
        torch.manual_seed(0)
        network = torch_network(23, OPTIONS)
        inputs, labels = (torch.from_numpy(a) for a in padded_batch([sequences[i] for i in rows]))
        present = labels > 0
        loss = full_softmax_loss(torch).apply(network(inputs)[present], network.items.weight[1:], labels[present] - 1)
        (loss * factor).backward()
        return [p.grad.clone() for p in network.parameters()]

    whole = gradients(batch, 1.0)
    for world in (2, 3, 4):
        shares = [gradients(*batch_share(batch, lengths, rank, world)) for rank in range(world)]
        averaged = [sum(parts) / world for parts in zip(*shares)]
        for got, expected in zip(averaged, whole):
            assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_the_settings_and_the_spark_session_choose_the_engine(spark):
    settings = load_settings({"NEXTWATCH_SEQUENCE_ENGINE": "distributor", "NEXTWATCH_SEQUENCE_PROCESSES": "3",
                              "NEXTWATCH_SEQUENCE_DEVICE": "cpu"})
    assert engine_from_settings(settings) == Engine("distributor", 3, "cpu")
    assert engine_from_settings(load_settings({})) == Engine("auto", 0, "auto")
    # In local mode local trains in this process, and so does auto below LONG_TRAINING_POSITIONS
    # positions an epoch; distributor (and auto from there) runs N processes of local[N] here,
    # each with its share of the cores.
    assert distributor_plan(Engine("auto")) is None and distributor_plan(Engine("local")) is None
    assert distributor_plan(Engine("auto"), positions=LONG_TRAINING_POSITIONS - 1) is None
    assert distributor_plan(Engine("local"), positions=10 * LONG_TRAINING_POSITIONS) is None
    long_one = distributor_plan(Engine("auto"), positions=LONG_TRAINING_POSITIONS)
    assert (long_one.processes, long_one.on_executors, long_one.use_gpu) == (2, False, False)
    plan = distributor_plan(Engine("distributor"))
    assert (plan.processes, plan.on_executors, plan.use_gpu) == (2, False, False)
    assert plan.threads == max(1, (os.cpu_count() or 1) // 2)
    assert distributor_plan(Engine("distributor", processes=3)).processes == 3
    with pytest.raises(ValueError, match="engine"):
        Engine("spark")


def test_the_device_is_a_gpu_only_when_pytorch_sees_one_and_the_settings_allow_it():
    assert training_device(Engine(device="cpu"), torch).type == "cpu"
    assert training_device(Engine(), torch).type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_two_processes_under_torch_distributor_train_as_one_and_stop_together(spark):
    histories = stride_histories(300, 37, seed=0)
    train_part, targets = [h[:-1] for h in histories], np.array([h[-1] for h in histories])
    alone_model, alone = train_sequence_model(train_part, 37, OPTIONS, holdout=(train_part, targets))
    two = dataclasses.replace(OPTIONS, engine=Engine("distributor", processes=2, device="cpu"))
    model, report = train_sequence_model(train_part, 37, two, holdout=(train_part, targets))
    assert alone.engine == "local-cpu"
    assert report.engine == "torch-distributor 2 processes (gloo, cpu, this machine)"
    # The same batches and gradients: the same epochs and holdout curve (to float noise, which
    # Adam carries on), and the weights of the same epoch.
    assert (report.epochs, report.best_epoch, report.stopped_by) == (alone.epochs, alone.best_epoch, alone.stopped_by)
    assert report.positions == alone.positions > 0
    assert np.allclose(report.holdout_ndcg, alone.holdout_ndcg, atol=5e-3)
    assert max(report.holdout_ndcg) > report.holdout_ndcg[0]  # it learned
    for name, array in alone_model.arrays.items():
        assert np.allclose(model.arrays[name], array, atol=5e-2), name

    # The cap, given as the seconds left, stops every process before its first batch: reported
    # as one process reports it.
    _, capped = train_sequence_model(train_part, 37, two, holdout=(train_part, targets), cap=time.monotonic())
    assert (capped.epochs, capped.stopped_by, capped.time_capped) == (0, TIME_CAP, True)
