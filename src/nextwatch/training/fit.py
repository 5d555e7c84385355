"""Fitting a next-title model with Spark, without Redis: events in, a ``NextTitleModel`` out.

A fit has up to two halves, which meet only here:

- the table (``table_fit.py``): by default the neighbour table, its recipe (γ, back, η of
  ``params.GRID``) tuned on a holdout; ``FitParams.model = "transitions"`` selects the
  original model, which is not tuned;
- with ``sequence`` options (and PyTorch), the sequence model (``sequence_fit.py``): first on
  the tuning events until the holdout says stop, where its blend weight λ is chosen; then,
  when λ > 0, on all the events, continuing the tuned network.

Three ways in, one function each:

- params given: built with them, no tuning (from the tuned network when the caller passes it
  as ``warm_start``: ``evaluate``'s final fit);
- ``tune_on`` given (``evaluate``'s validation targets): tuned there, built from all events;
- neither: tuned on an inner holdout (``holdout.py``), each user's last event; beyond
  ``TUNING_EVENTS`` events on a sample of users, whose users are also all the network's final
  pass learns from (their last titles included): its training then costs the same at any
  size, where a final pass over every event, 5x a tuning epoch at 10M events, would be cut by
  the cap, making the model depend on the machine's speed.

``deadline`` (a ``time.monotonic()`` value) is the run's safety cap, not a budget: the table is
always built, and the network stops early only if the cap comes first (``time_capped`` in the
report). With an inner holdout the final table is built before the network trains, so the cap
holds the whole run; with ``tune_on`` the time of a final table build is set aside for it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np
from pyspark.sql import DataFrame, SparkSession

from ..model import NextTitleModel
from ..model.sequence import SequenceModel
from .holdout import HOLDOUT_USERS, TUNING_EVENTS, inner_holdout, user_sample
from .neighbours import user_sequences
from .params import GRID, FitParams
from .sequence_training import TIME_CAP, SequenceOptions
from .sequence_fit import SEQUENCE_WEIGHTS, Tuned, final_sequence, tune_sequence
from .table_fit import TitleCodes, build_table, title_counts, tune_table, with_codes
from .timing import timed

# Read here by callers: the fit's parameters, grid, title codes and λ grid.
__all__ = ["GRID", "SEQUENCE_WEIGHTS", "FitParams", "FitReport", "TitleCodes", "fit_next_title"]


@dataclasses.dataclass
class FitReport:
    params: FitParams  # the parameters of the returned model
    holdout: dict | None  # metrics of the chosen point on the tuning targets (None: not tuned)
    grid: list[dict]  # every tried point with its metrics
    events: int  # events the returned model was built from
    seconds: float
    sequence: dict | None = None  # the sequence model's tuning: epochs, holdout curve, λ tried, final training
    sequence_network: SequenceModel | None = None  # the tuned network, to continue in a final fit (warm_start)
    sequence_stopped_by: str | None = None  # "patience", "epochs" or "time cap" (None: no network trained)
    time_capped: bool = False  # the run's cap ended a training of the network before its rule did


def fit_next_title(spark: SparkSession, events: DataFrame, titles: TitleCodes | int,
                   params: FitParams | None = None, tune_on: tuple[Sequence[np.ndarray], np.ndarray] | None = None,
                   grid: Sequence[dict] = GRID, order_column: str | None = None, base: FitParams = FitParams(),
                   holdout_users: int = HOLDOUT_USERS, tuning_events: int = TUNING_EVENTS,
                   seed: int = 0, sequence: SequenceOptions | None = None,
                   deadline: float | None = None,
                   warm_start: SequenceModel | None = None) -> tuple[NextTitleModel, FitReport]:
    """Build a model from ``events`` (``user_id``, ``content_id`` or ``code``, ``timestamp``,
    optionally ``order_column`` for timestamp ties).

    ``titles``: the codes of the content ids (events with ``content_id``), or the title count
    when the events carry ``code`` already. ``params`` given: built with those, no tuning.
    ``params`` None: ``base`` with the best ``grid`` point by NDCG@10, on ``tune_on``
    (histories, targets as title codes; the model is built from all ``events``) or else on an
    inner holdout of each user's last event (the final model is then rebuilt from all events);
    beyond ``tuning_events`` events the holdout is taken from a seeded sample of users with
    about that many events. ``sequence``: also train the sequence model, ``deadline`` its
    safety cap; ``warm_start``: the network a tuning fit returned (``FitReport.sequence_network``),
    continued instead of trained afresh (module docstring).
    """
    started = time.monotonic()
    title_count = titles if isinstance(titles, int) else titles.title_count
    coded = with_codes(spark, events, titles, order_column)
    if params is not None or base.model == "transitions":
        model, report = _fit_with(coded, params or base, title_count, order_column, sequence, deadline, warm_start)
    elif tune_on is not None:
        model, report = _fit_tuned_on(coded, tune_on, base, grid, title_count, order_column, sequence, deadline)
    else:
        model, report = _fit_on_inner_holdout(coded, base, grid, title_count, order_column, holdout_users,
                                              tuning_events, seed, sequence, deadline)
    report.seconds = time.monotonic() - started
    return model, report


def _fit_with(coded: DataFrame, chosen: FitParams, title_count: int, order_column: str | None,
              sequence: SequenceOptions | None, deadline: float | None, warm_start: SequenceModel | None):
    """No tuning: the table of ``chosen``, and its network when λ > 0."""
    model, n_events = build_table(coded, chosen, title_counts(coded, title_count), order_column)
    report = FitReport(chosen, None, [], n_events, 0.0)
    if sequence is not None and chosen.sequence_weight > 0:
        model = _final_sequence(model, coded, order_column, chosen, sequence, deadline, warm_start, report)
    return model, report


def _fit_tuned_on(coded: DataFrame, tune_on, base: FitParams, grid: Sequence[dict], title_count: int,
                  order_column: str | None, sequence: SequenceOptions | None, deadline: float | None):
    """Tuned on the caller's (histories, targets), the table built from all of ``coded``; the
    network is tuned there too, and its final training left to the caller (``warm_start``)."""
    histories, targets = tune_on
    targets = np.asarray(targets)
    table = tune_table(coded, base, grid, title_count, order_column, histories, targets, keep_model=True)
    model, chosen, tuned = table.model, table.params, None
    if sequence is not None:
        tuned = tune_sequence(model, _histories(coded, order_column), histories, targets, chosen, sequence,
                              _tuning_cap(deadline, table.table_seconds))
        chosen = tuned.params
        model = _attached(model, tuned.network, chosen)
    report = FitReport(chosen, table.holdout, table.tried, table.events, 0.0)
    _record_tuning(report, tuned)
    return model, report


def _fit_on_inner_holdout(coded: DataFrame, base: FitParams, grid: Sequence[dict], title_count: int,
                          order_column: str | None, holdout_users: int, tuning_events: int, seed: int,
                          sequence: SequenceOptions | None, deadline: float | None):
    """Tuned on each (sampled) user's last event, then everything built for all of ``coded``."""
    with timed("holdout split"):
        counted = title_counts(coded, title_count)  # the final build's, and the sample's total
        sample = user_sample(coded, counted[1], tuning_events, seed)
        positioned, train_part, histories, targets = inner_holdout(sample, order_column, holdout_users, seed)
    tuned, holdout_model = None, None
    try:
        if len(targets):
            table = tune_table(train_part, base, grid, title_count, "pos", histories, targets,
                               keep_model=sequence is not None)
            chosen, tried, holdout, holdout_model = table.params, table.tried, table.holdout, table.model
        else:  # nobody has enough events to hold one out: the defaults
            chosen, tried, holdout = base, [], None
        # The final table before the network's tuning, which then trains in the time the cap
        # really leaves: a reserve for the table after it had to be guessed, and at 10M
        # events the final build took 2.5x that guess, running 2-3 minutes past the cap.
        model, n_events = build_table(coded, chosen, counted, order_column)
        if holdout_model is not None:  # tuned with a sequence model asked for
            tuned = tune_sequence(holdout_model, _histories(train_part, "pos"), histories, targets, chosen,
                                  sequence, deadline)
            chosen = tuned.params
    finally:
        positioned.unpersist()
    report = FitReport(chosen, holdout, tried, n_events, 0.0)
    if sequence is not None and chosen.sequence_weight > 0:
        # The sample's users, each now with the last title the holdout kept back: all the
        # events below tuning_events, and beyond them final epochs that cost what tuning
        # epochs cost, whatever the data's size (the network needs no per-user weights, so it
        # scores every user's history all the same).
        model = _final_sequence(model, sample, order_column, chosen, sequence, deadline,
                                tuned.network if tuned else None, report)
    elif tuned is not None:  # λ = 0: the table alone, its params recording the tuning's choice
        model = _attached(model, None, chosen)
    _record_tuning(report, tuned)
    return model, report


def _record_tuning(report: FitReport, tuned: Tuned | None) -> None:
    """The network's tuning into ``report``, around the final training's record if there was one."""
    if tuned is None:
        return
    report.sequence = {**tuned.report, **({"final": report.sequence} if report.sequence else {})}
    report.sequence_network = tuned.network
    report.time_capped = report.time_capped or tuned.stopped_by == TIME_CAP
    report.sequence_stopped_by = TIME_CAP if report.time_capped else tuned.stopped_by


def _histories(coded: DataFrame, order_column: str | None) -> list[np.ndarray]:
    """Every user's title codes in time order, on the driver (the sequence model trains there)."""
    with timed("collecting histories"):
        table = user_sequences(coded, order_column).select("titles").toArrow()
        titles = table.column("titles").combine_chunks()
        codes = titles.values.to_numpy(zero_copy_only=False).astype(np.int64)
        offsets = titles.offsets.to_numpy()
        return [codes[offsets[i]: offsets[i + 1]] for i in range(len(offsets) - 1)]


def _tuning_cap(deadline: float | None, table_seconds: float) -> float | None:
    """The cap of the network's tuning: the run's, less a final table build, which is always made:
    at most as long as the tuning's tables of every grid point, built in one pass (``table_seconds``;
    on Amazon Beauty 87 s against 20 s for the final one, while the whole table tuning, scoring
    the grid included, took 320 s)."""
    return None if deadline is None else deadline - table_seconds


def _final_sequence(model: NextTitleModel, coded: DataFrame, order_column: str | None, params: FitParams,
                    options: SequenceOptions, deadline: float | None, start: SequenceModel | None,
                    report: FitReport) -> NextTitleModel:
    """``model`` with the network trained on all of ``coded`` (``sequence_fit.final_sequence``);
    the table alone if the cap left no time to train one. ``report`` learns what was done."""
    network, final = final_sequence(model.title_count, lambda: _histories(coded, order_column), params.sequence_epochs,
                                    options, deadline, start)
    report.sequence = final  # the tuning's report takes it in as "final" when there was one
    report.time_capped = final["stopped_by"] == TIME_CAP
    report.sequence_stopped_by = final["stopped_by"]
    if network is None:
        params = dataclasses.replace(params, sequence_weight=0.0, sequence_epochs=0)
        report.params = params
    return _attached(model, network, params)


def _attached(model: NextTitleModel, network, params: FitParams) -> NextTitleModel:
    return NextTitleModel(model.popularity, model.neighbour_offsets, model.neighbour_codes, model.neighbour_scores,
                          weights=model.weights, popularity_weight=model.popularity_weight,
                          params=params.recorded(), sequence=network, sequence_weight=params.sequence_weight)
