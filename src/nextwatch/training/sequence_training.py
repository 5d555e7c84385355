"""Training the sequence model (``model/sequence.py``) with PyTorch.

The network predicts, at every position of a user's recent history, the title that comes next,
trained with cross-entropy (``losses.py``): a softmax over the whole catalog, or, on catalogs
where that costs too much, over the target and ``negatives`` sampled titles (``loss``: auto
chooses by the number of titles). Histories are the last ``max_length + 1`` titles of each
user, left padded in batches. Two ways to train:

- with a holdout (histories, targets): NDCG@10 of the network alone is measured on a sample of
  the holdout after each epoch; training stops once it has not risen for ``patience`` epochs (or
  at ``max_epochs``) and returns the best epoch's weights and that epoch number;
- with a number of epochs (the one a holdout run chose): exactly that many, from fresh weights
  or from a network already trained (``start``: the final fit continues the tuned network).

The holdout, not the clock, chooses the epochs: two runs with the same seed train the same
epochs and end with the same weights however busy the machine is. ``cap`` (a
``time.monotonic()`` value) is only a safety net for the whole run: reached, training stops
where it is (checked per batch), the report says ``stopped_by="time cap"`` and a warning says
``time cap reached``.

Where it trains (``engines.py``): in this process, on the CPU or a GPU, or under pyspark's
TorchDistributor in several processes (``distributed.py``), which run this same loop
(``train_network``) and share each batch (``ranks.py``). The report names the engine.

PyTorch is imported here only, when training runs: serving and evaluation score the exported
NumPy weights.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Sequence

import numpy as np

from ..evaluation.ranking_metrics import rank_block
from ..model.sequence import SequenceModel
from .engines import Engine, engine_from_settings, local_engine_name, training_device
from .ranks import GO_ON, ONE_PROCESS, PATIENCE, TIME_CAP_REACHED, batch_share, rank_seed
from .losses import AUTO, batch_loss, loss_record
from .network import exported, load_weights, torch_network

log = logging.getLogger(__name__)

TIME_CAP = "time cap"  # stopped_by when the run's safety cap ended training


@dataclasses.dataclass(frozen=True)
class SequenceOptions:
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.3
    max_length: int = 50
    batch_size: int = 128  # sequences per step, over all the processes of a distributed training
    learning_rate: float = 1e-3
    max_epochs: int = 40
    patience: int = 3  # epochs without a better holdout figure before stopping
    holdout_sample: int = 3000  # holdout users measured after each epoch
    threads: int = 0  # 0: every core (a distributed training: each process's share of them)
    seed: int = 0
    loss: str = AUTO  # full, sampled, or auto: by the number of titles (losses.py)
    negatives: int = 3000  # titles each batch's targets are contrasted with, when the loss is sampled
    engine: Engine = Engine()  # where it trains (engines.py)


@dataclasses.dataclass
class SequenceReport:
    epochs: int  # epochs trained
    best_epoch: int  # the epoch whose weights were returned
    holdout_ndcg: list[float]  # per epoch, on the holdout sample (empty without a holdout)
    seconds: float
    stopped_by: str  # "patience", "epochs" (max_epochs or the epochs asked for), "time cap"
    engine: str = "local-cpu"  # "local-cpu", "cuda" or "torch-distributor N processes (...)"
    positions: int = 0  # positions trained on, every epoch and process together
    train_seconds: float = 0.0  # of ``seconds``, the passes over the batches (no holdout, no set-up)
    loss: dict = dataclasses.field(default_factory=dict)  # the loss trained with (``loss_record``)

    @property
    def time_capped(self) -> bool:
        return self.stopped_by == TIME_CAP


def options_from(settings) -> SequenceOptions | None:
    """The sequence model's options from ``Settings``: None when it is off, or when PyTorch is
    not installed (the table is then trained alone, and a warning says why)."""
    if settings.sequence_model == "off":
        return None
    if not torch_available():
        log.warning("PyTorch is not installed: training the table alone, without the sequence model "
                    "(pip install 'nextwatch[sequence]', or NEXTWATCH_SEQUENCE_MODEL=off to silence this)")
        return None
    return SequenceOptions(loss=settings.sequence_loss, negatives=settings.sequence_negatives,
                           engine=engine_from_settings(settings))


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def train_sequence_model(histories: Sequence[np.ndarray], title_count: int, options: SequenceOptions = SequenceOptions(),
                         holdout: tuple[Sequence[np.ndarray], np.ndarray] | None = None,
                         epochs: int | None = None, start: SequenceModel | None = None,
                         cap: float | None = None) -> tuple[SequenceModel, SequenceReport]:
    """Train on ``histories`` (title codes, oldest first). ``holdout``: choose the epoch on it;
    else train ``epochs`` epochs (default ``options.max_epochs``). ``start``: begin from these
    weights (same options) instead of fresh ones. ``cap``: the run's safety cap (module
    docstring). ``options.engine`` says where (``engines.py``)."""
    from .engines import distributor_plan

    seconds_left = None if cap is None else cap - time.monotonic()
    sequences = training_sequences(histories, options)
    sample = _holdout_sample(holdout, options) if holdout is not None else None
    target_epochs = options.max_epochs if holdout is not None or epochs is None else epochs
    plan = distributor_plan(options.engine, positions=sum(len(s) - 1 for s in sequences))
    if plan is not None:
        from .distributed import train_with_distributor

        return train_with_distributor(plan, sequences, title_count, options, sample, target_epochs, start, seconds_left)
    import torch

    return train_network(sequences, title_count, options, sample, target_epochs, start, seconds_left,
                         device=training_device(options.engine, torch))


def training_sequences(histories: Sequence[np.ndarray], options: SequenceOptions) -> list[np.ndarray]:
    """What the network trains on: each history's last ``max_length + 1`` titles (at least 2)."""
    return [np.asarray(h[-(options.max_length + 1):], dtype=np.int64) for h in histories if len(h) >= 2]


def train_network(sequences: list[np.ndarray], title_count: int, options: SequenceOptions, sample,
                  target_epochs: int, start: SequenceModel | None, seconds_left: float | None,
                  ranks=ONE_PROCESS, device="cpu", engine: str | None = None) -> tuple[SequenceModel, SequenceReport]:
    """The training loop of every engine: ``ranks`` are the processes of this training
    (``ranks.py``: one, or a torch.distributed group), ``device`` this process's; ``sample``
    the holdout sample (process 0 measures it). Every process returns process 0's result."""
    import torch

    started = time.monotonic()
    cap = None if seconds_left is None else started + seconds_left
    torch.manual_seed(options.seed)
    torch.set_num_threads(training_threads(options))
    rng = np.random.default_rng(options.seed)  # the same batches in every process
    network = torch_network(title_count, options)
    if start is not None:
        load_weights(network, start)
    network.to(device)
    trained = ranks.wrap(network)
    if ranks.world > 1:
        torch.manual_seed(rank_seed(options.seed, ranks.rank))
    optimiser = torch.optim.Adam(network.parameters(), lr=options.learning_rate)
    loss_used = loss_record(options.loss, options.negatives, title_count)
    # Its own generator (seed + 2; the holdout sample takes seed + 1): the batches' order and the
    # dropout draw the same with either loss, and every process draws the same negatives.
    loss_of = batch_loss(loss_used["loss"], title_count, options.negatives, options.seed + 2)
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    measuring = sample is not None and ranks.rank == 0
    curve: list[float] = []
    best_state, best_epoch, stopped_by, epoch, positions, train_seconds = None, 0, "epochs", 0, 0, 0.0
    for epoch in range(1, target_epochs + 1):
        epoch_started = time.monotonic()
        loss, count, finished = _train_epoch(trained, network, optimiser, loss_of, sequences, lengths, rng, options,
                                             torch, cap, ranks, device)
        train_seconds += time.monotonic() - epoch_started
        loss, count = ranks.totals(loss, count)
        loss, positions = loss / max(count, 1), positions + int(count)
        message = f"sequence model epoch {epoch}: loss {loss:.4f}, {time.monotonic() - epoch_started:.1f} s"
        if not finished:  # part of an epoch: neither measured nor kept over a finished one
            if ranks.rank == 0:
                log.info(message + " (stopped inside the epoch)")
            stopped_by = TIME_CAP
            epoch -= 1
            break
        verdict = GO_ON
        if measuring:
            curve.append(_sample_ndcg(exported(network, options), *sample))
            message += f", holdout NDCG@10 {curve[-1]:.4f}"
            if curve[-1] > max(curve[:-1], default=-1.0):
                best_state, best_epoch = {k: v.clone() for k, v in network.state_dict().items()}, epoch
            elif epoch - best_epoch >= options.patience:
                verdict = PATIENCE
        if verdict == GO_ON and cap is not None and time.monotonic() > cap and epoch < target_epochs:
            verdict = TIME_CAP_REACHED
        if ranks.rank == 0:
            log.info(message)
        verdict = ranks.agree(verdict)
        if verdict != GO_ON:
            stopped_by = "patience" if verdict == PATIENCE else TIME_CAP
            break
    if ranks.rank != 0:
        return ranks.shared(None)
    if best_state is not None:
        network.load_state_dict(best_state)
    else:
        best_epoch = epoch
    report = SequenceReport(epoch, best_epoch, curve, time.monotonic() - started, stopped_by, loss=loss_used,
                            engine=engine or local_engine_name(torch.device(device)), positions=positions,
                            train_seconds=train_seconds)
    if report.time_capped:
        log.warning("sequence model: time cap reached (NEXTWATCH_TRAIN_MINUTES) after %d full epochs, before %s",
                    epoch, "the holdout said stop" if sample is not None else f"the {target_epochs} asked for")
    log.info("sequence model: %d epochs, kept epoch %d (%s), %.1f s, %s, loss %s", epoch, best_epoch, stopped_by,
             report.seconds, report.engine, loss_used)
    return ranks.shared((exported(network, options), report))


def training_threads(options: SequenceOptions) -> int:
    """PyTorch's threads: every core unless the options say otherwise. Set on every training,
    because the package asks for one BLAS thread per process (``nextwatch/__init__.py``)
    and PyTorch would take that as its default."""
    return options.threads or os.cpu_count() or 1


def _holdout_sample(holdout, options: SequenceOptions):
    histories, targets = holdout
    targets = np.asarray(targets, dtype=np.int64)
    chosen = np.random.default_rng(options.seed + 1).permutation(len(targets))[: options.holdout_sample]
    return [np.asarray(histories[i]) for i in chosen], targets[chosen]


def _sample_ndcg(model: SequenceModel, histories, targets, block: int = 512) -> float:
    gains = []
    for start in range(0, len(targets), block):
        part = histories[start: start + block]
        ranks, _ = rank_block(model.batch_scores(part), part, targets[start: start + block])
        gains.append(np.where(ranks < 10, 1.0 / np.log2(np.minimum(ranks, 10**6) + 2.0), 0.0))
    return float(np.concatenate(gains).mean()) if gains else 0.0


def _train_epoch(trained, network, optimiser, loss_of, sequences, lengths, rng, options: SequenceOptions, torch,
                 cap: float | None, ranks, device) -> tuple[float, int, bool]:
    """One pass in random batches with ``loss_of`` (``losses.batch_loss``), each batch shared
    among ``ranks``: this process's loss summed over its positions, their count, and whether the
    pass finished before ``cap`` (checked per batch, process 0's clock deciding: on a large event
    log one epoch alone can outlast the cap)."""
    trained.train()
    total, count = 0.0, 0
    order = rng.permutation(len(sequences))
    for start in range(0, len(order), options.batch_size):
        if cap is not None and ranks.agree(TIME_CAP_REACHED if time.monotonic() > cap else GO_ON) != GO_ON:
            return total, count, False
        mine, factor = batch_share(order[start: start + options.batch_size], lengths, ranks.rank, ranks.world)
        inputs, labels = (torch.from_numpy(a).to(device) for a in padded_batch([sequences[i] for i in mine]))
        states = trained(inputs)
        present = labels > 0
        loss = loss_of(states[present], network.items.weight[1:], labels[present] - 1)
        optimiser.zero_grad()
        (loss * factor if factor != 1.0 else loss).backward()
        optimiser.step()
        if factor:
            positions = int(present.sum())
            total += loss.item() * positions
            count += positions
    return total, count, True


def padded_batch(batch: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and labels of ``batch``, left padded to its longest sequence: code + 1, 0 padding."""
    width = max(len(s) for s in batch) - 1
    inputs = np.zeros((len(batch), width), dtype=np.int64)
    labels = np.zeros((len(batch), width), dtype=np.int64)
    for row, s in enumerate(batch):
        inputs[row, width - len(s) + 1:] = s[:-1] + 1
        labels[row, width - len(s) + 1:] = s[1:] + 1
    return inputs, labels
