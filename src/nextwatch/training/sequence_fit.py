"""The sequence model's two trainings inside a fit (``fit.py``), and what the run's safety cap did
to them.

- Tuning: the network trains on the tuning events until the holdout says stop
  (``sequence_training.py``), then its blend weight λ is chosen on the same holdout from
  ``SEQUENCE_WEIGHTS`` (0 keeps the table alone). ``FitParams`` records λ and the best epoch.
- The final training on all the events (beyond ``holdout.TUNING_EVENTS``, the tuning sample's
  users' events) runs the epochs the tuning kept (its best epoch, recorded in ``FitParams``).
  After a tuning in the same run it continues the tuned network for them: the final events are
  the tuning events plus each user's last one, which the tuned network has never trained on.
  Given only params (no tuned network), it trains them from fresh weights.

``cap`` (a ``time.monotonic()`` value, from NEXTWATCH_TRAIN_MINUTES) is a safety net, not a
budget: the holdout chooses the epochs, and the cap only stops a run that would otherwise go on
too long. A tuning with under ``MIN_SEQUENCE_SECONDS`` left is skipped (the table alone); a
final training cut short keeps the weights it has (the tuned ones, or the table alone when it
started fresh with no time to learn).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

import numpy as np

from ..evaluation.ranking_metrics import rank_block, summarise
from ..model import NextTitleModel
from ..model.next_title import standardised_rows, unwatched_mask
from ..model.sequence import SequenceModel
from .sequence_training import TIME_CAP, SequenceOptions, train_sequence_model
from .timing import timed

log = logging.getLogger(__name__)

# Less time than this left for the tuning of the network: the table alone (it would not learn).
MIN_SEQUENCE_SECONDS = 30.0
# λ of z(table) + λ z(sequence): 0 is the table alone; the largest leave the table to break ties.
SEQUENCE_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
# Epochs of the final training when continuing the tuned network. None: as many as the tuning
# kept, a rule that scales with the data rather than a count fitted to one file. Chosen without
# test targets (research/final-epoch, each user's last title dropped, 3 seeds): on Amazon Beauty
# NDCG@10 rose from .0752 with 1 epoch to .0771 with 5, .0781 with 8, .0784 with 12 and
# .0787 with the tuning's count (12-15 epochs); on MovieLens 100K 5, 8, 12 and the
# tuning's count (23-31) were within a standard error. An integer fixes the count (the study
# sets it).
FINAL_EPOCHS: int | None = None


@dataclasses.dataclass
class Tuned:
    params: object  # FitParams with λ and the epochs
    report: dict  # what the fit's report and the model's metadata keep (``sequence_tuning``)
    network: SequenceModel | None  # the tuned network (None: skipped)
    stopped_by: str  # the tuning's: "patience", "epochs" or "time cap"


def tune_sequence(table_model: NextTitleModel, train_histories: list[np.ndarray], histories, targets: np.ndarray,
                  chosen, options: SequenceOptions, cap: float | None) -> Tuned:
    """Train the network on ``train_histories``, keeping its best epoch on the holdout
    (``histories``, ``targets``), then choose λ there with ``table_model``."""
    left = None if cap is None else cap - time.monotonic()
    if left is not None and left < MIN_SEQUENCE_SECONDS:
        log.warning("time cap reached: %.0f s left for the sequence model, training the table alone "
                    "(NEXTWATCH_TRAIN_MINUTES)", max(left, 0.0))
        return Tuned(chosen, {"skipped": f"{max(left, 0.0):.0f} s left of the run's time cap",
                              "stopped_by": TIME_CAP}, None, TIME_CAP)
    with timed("sequence model on the tuning events"):
        network, report = train_sequence_model(train_histories, table_model.title_count, options,
                                               holdout=(histories, targets), cap=cap)
    with timed("choosing the sequence model's weight"):
        by_weight = blend_metrics(table_model, network, histories, targets, SEQUENCE_WEIGHTS)
    best = max(SEQUENCE_WEIGHTS, key=lambda w: (by_weight[w]["ndcg@10"], -w))  # equal: the smaller λ
    log.info("sequence weight %s chosen: holdout NDCG@10 %.4f (table alone %.4f)", best,
             by_weight[best]["ndcg@10"], by_weight[0.0]["ndcg@10"])
    tuning = {**report.loss, "engine": report.engine, "epochs": report.epochs, "best_epoch": report.best_epoch,
              "stopped_by": report.stopped_by, "seconds": round(report.seconds, 1), "positions": report.positions,
              "holdout_ndcg_by_epoch": [round(v, 5) for v in report.holdout_ndcg],
              "weights": [{"weight": w, "hr@10": m["hr@10"], "ndcg@10": m["ndcg@10"]} for w, m in by_weight.items()]}
    chosen = dataclasses.replace(chosen, sequence_weight=best, sequence_epochs=report.best_epoch if best > 0 else 0)
    return Tuned(chosen, tuning, network, report.stopped_by)


def final_sequence(title_count: int, histories: Callable[[], list[np.ndarray]], epochs: int,
                   options: SequenceOptions, cap: float | None,
                   start: SequenceModel | None) -> tuple[SequenceModel | None, dict]:
    """The network trained on all the events (``histories()``) for ``epochs`` (the tuning's kept
    count; ``FINAL_EPOCHS`` when set), continuing ``start`` or from fresh weights. None when it
    started fresh and the cap left no time; the dict says what was done (the fit's report keeps
    it)."""
    left = None if cap is None else cap - time.monotonic()
    if start is not None and left is not None and left <= 0:  # starting the engine would only stop it
        log.warning("time cap reached: publishing the tuned sequence model without its final epoch "
                    "(NEXTWATCH_TRAIN_MINUTES)")
        return start, {"start": "tuned", "epochs": 0, "stopped_by": TIME_CAP}
    if start is None:
        if left is not None and left < MIN_SEQUENCE_SECONDS:
            log.warning("time cap reached: %.0f s left for the sequence model, publishing the table alone "
                        "(NEXTWATCH_TRAIN_MINUTES)", max(left, 0.0))
            return None, {"start": "fresh", "epochs": 0, "stopped_by": TIME_CAP}
    if start is None:
        epochs = max(1, epochs)
    elif FINAL_EPOCHS is not None:
        epochs = FINAL_EPOCHS  # 0: the tuned weights as they are
    with timed("sequence model on all the events"):
        network, report = train_sequence_model(histories(), title_count, options, start=start, cap=cap,
                                               epochs=epochs)
    if start is None and report.epochs == 0:  # cut short inside its first epoch: it learned little
        return None, {"start": "fresh", "epochs": 0, "stopped_by": TIME_CAP}
    return network, {**report.loss, "engine": report.engine, "start": "tuned" if start is not None else "fresh",
                     "epochs": report.epochs, "stopped_by": report.stopped_by, "seconds": round(report.seconds, 1),
                     "positions": report.positions}


def blend_metrics(table_model: NextTitleModel, network, histories, targets: np.ndarray, weights,
                  block: int = 256) -> dict[float, dict]:
    """HR@10 and NDCG@10 of the blend for every weight, each user's two standardised score rows
    computed once (what ``NextTitleModel.dense_scores`` computes, a block of users at a time)."""
    ranks: dict[float, list[np.ndarray]] = {w: [] for w in weights}
    for start in range(0, len(targets), block):
        part, part_targets = histories[start: start + block], targets[start: start + block]
        unwatched = np.stack([unwatched_mask(h, table_model.title_count) for h in part])
        table = standardised_rows(np.stack([table_model.table_scores(h) for h in part]), unwatched)
        learned = standardised_rows(network.batch_scores(part), unwatched)
        for weight in weights:
            ranks[weight].append(rank_block(table + weight * learned, part, part_targets)[0])
    out = {}
    for weight, parts in ranks.items():
        metrics = summarise(np.concatenate(parts), np.zeros(0))
        out[weight] = {"hr@10": float(metrics["hr@10"]), "ndcg@10": float(metrics["ndcg@10"])}
    return out
