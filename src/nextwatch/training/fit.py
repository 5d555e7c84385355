"""Fitting a next-title model with Spark, without Redis: events in, a ``NextTitleModel`` out.

Two variants behind one name (``FitParams.model``):

- ``"neighbours"`` (the default): the table of ``neighbours.py`` (multi-step transitions both
  ways, row-scaled, plus co-watch cosine), scored over the last 10 titles weighted 0.6^i.
  Its parameters (γ, back, η) are tuned on a holdout: by default each user's last event (users
  with at least 3), or the (histories, targets) the caller gives (``evaluate`` gives the
  protocol's validation targets). The pair sums are counted once for every γ of the grid and
  all grid points are ranked in the same pass; the final model is then built from all the
  events. Beyond ``TUNING_EVENTS`` events, the holdout comes from a sample of users.
- ``"transitions"``: P(next | title) over consecutive events (``transitions.py``), the
  original model, kept selectable.

With ``sequence`` options (and PyTorch), a sequence model is trained beside the neighbour table
(``sequence_fit.py``): first on the tuning events until the holdout says stop, where its blend
weight λ is chosen; then, when λ > 0, on all the events, continuing the tuned network. Beyond
``TUNING_EVENTS`` events the network learns from the tuning sample's users only (their last
titles included in the final pass): its training costs the same at any size, and a final pass
over every event, 5x a tuning epoch at 10M events, would be cut by the cap, making the model
depend on the machine's speed.
``FitParams`` records λ and the epochs, so a fit with given params trains without a holdout
(from the tuned network when the caller passes it as ``warm_start``: ``evaluate``'s final fit).

``deadline`` (a ``time.monotonic()`` value) is the run's safety cap, not a budget: the table is
always built, and the network stops early only if the cap comes first (``time_capped`` in the
report). With an inner holdout the final table is built before the network trains, so the cap
holds the whole run; with ``tune_on`` the time of a final table build is set aside for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Sequence

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from ..evaluation.metrics import evaluate_scorer
from ..model import NextTitleModel, PositionWeights
from .neighbours import audiences, ordered, pair_sums, ranked_neighbours, user_sequences
from ..model.sequence import SequenceModel
from .sequence import TIME_CAP, SequenceOptions
from .sequence_fit import SEQUENCE_WEIGHTS, final_sequence, tune_sequence  # noqa: F401  (read here by callers)
from .transitions import next_title_candidates

log = logging.getLogger(__name__)

MODELS = ("neighbours", "transitions")
GRID: tuple[dict, ...] = tuple({"gamma": g, "back": b, "eta": e}
                               for g in (0.7, 0.85) for b in (0.0, 0.25, 0.5) for e in (0.0, 0.3))
HOLDOUT_USERS = 10_000  # users sampled for the inner holdout
# Tuning builds the model once per grid point, so its cost is bounded by tuning on a seeded
# sample of users holding about this many events; only the final build grows with the data.
TUNING_EVENTS = 2_000_000
MIN_HOLDOUT_EVENTS = 3


@dataclasses.dataclass(frozen=True)
class FitParams:
    model: str = "neighbours"
    gamma: float = 0.85
    back: float = 0.25
    eta: float = 0.3
    max_lead: int = 10
    max_user_titles: int = 200
    top_n: int = 100
    window: int = 10
    decay: float = 0.6
    popularity_weight: float = 1e-3
    sequence_weight: float = 0.0  # λ of the sequence model's blend (0: the table alone)
    sequence_epochs: int = 0  # epochs the sequence model trains on all the events

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.top_n < 1:
            raise ValueError(f"top_n must be at least 1, got {self.top_n}")

    def with_point(self, point: dict) -> "FitParams":
        return dataclasses.replace(self, **point)

    def recorded(self) -> dict:
        """What the model's ``params`` keep."""
        if self.model == "transitions":
            return {"model": "transitions", "top_n": self.top_n, "window": self.window, "decay": self.decay}
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TitleCodes:
    """The code of every content id: ``ids[i]`` has code ``codes[i]``."""

    ids: pa.Array
    codes: np.ndarray

    @property
    def title_count(self) -> int:
        return int(self.codes.max()) + 1 if len(self.codes) else 0


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
    coded = _with_codes(spark, events, titles, order_column)
    if params is not None or base.model == "transitions":
        chosen = params or base
        model, n_events = _build(coded, chosen, _popularity(coded, title_count), order_column)
        report = FitReport(chosen, None, [], n_events, 0.0)
        if sequence is not None and chosen.sequence_weight > 0:
            model = _final_sequence(model, coded, order_column, chosen, sequence, deadline, warm_start, report)
        report.seconds = time.monotonic() - started
        return model, report

    tuned = None
    if tune_on is not None:
        histories, targets = tune_on
        targets = np.asarray(targets)
        model, chosen, tried, holdout, n_events, table_seconds = _tune(coded, base, grid, title_count, order_column,
                                                                       histories, targets, keep_model=True)
        if sequence is not None:
            tuned = tune_sequence(model, _histories(coded, order_column), histories, targets, chosen, sequence,
                                  _tuning_cap(deadline, table_seconds), _timed)
            chosen = tuned.params
            model = _attached(model, tuned.network, chosen)
        report = FitReport(chosen, holdout, tried, n_events, 0.0)
    else:
        with _timed("holdout split"):
            counted = _popularity(coded, title_count)  # the final build's, and the sample's total
            sample = _user_sample(coded, counted[1], tuning_events, seed)
            positioned, train_part, histories, targets = _inner_holdout(sample, order_column, holdout_users, seed)
        try:
            if len(targets):
                holdout_model, chosen, tried, holdout, _, _ = _tune(
                    train_part, base, grid, title_count, "pos", histories, targets, keep_model=sequence is not None)
            else:  # nobody has enough events to hold one out: the defaults
                chosen, tried, holdout = base, [], None
            # The final table before the network's tuning, which then trains in the time the cap
            # really leaves: a reserve for the table after it had to be guessed, and at 10M
            # events the final build took 2.5x that guess, running 2-3 minutes past the cap.
            model, n_events = _build(coded, chosen, counted, order_column)
            if sequence is not None and len(targets):
                tuned = tune_sequence(holdout_model, _histories(train_part, "pos"), histories, targets, chosen,
                                      sequence, deadline, _timed)
                chosen = tuned.params
        finally:
            positioned.unpersist()
        report = FitReport(chosen, holdout, tried, n_events, 0.0)
        if sequence is not None and chosen.sequence_weight > 0:
            # The sample's users, each now with the last title the holdout kept back: all the
            # events below tuning_events, and beyond them a final pass that costs one tuning
            # epoch, whatever the data's size (the network needs no per-user weights, so it
            # scores every user's history all the same).
            model = _final_sequence(model, sample, order_column, chosen, sequence, deadline,
                                    tuned.network if tuned else None, report)
        elif tuned is not None:  # λ = 0: the table alone, its params recording the tuning's choice
            model = _attached(model, None, chosen)
    if tuned is not None:
        report.sequence = {**tuned.report, **({"final": report.sequence} if report.sequence else {})}
        report.sequence_network = tuned.network
        report.time_capped = report.time_capped or tuned.stopped_by == TIME_CAP
        report.sequence_stopped_by = TIME_CAP if report.time_capped else tuned.stopped_by
    report.seconds = time.monotonic() - started
    return model, report


def _histories(coded: DataFrame, order_column: str | None) -> list[np.ndarray]:
    """Every user's title codes in time order, on the driver (the sequence model trains there)."""
    with _timed("collecting histories"):
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
                                    options, deadline, start, _timed)
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


@contextlib.contextmanager
def _timed(stage: str):
    """Logs how long ``stage`` took: where a training run spends its time, run by run."""
    started = time.monotonic()
    yield
    log.info("%s: %.1f s", stage, time.monotonic() - started)


def _with_codes(spark: SparkSession, events: DataFrame, titles: TitleCodes | int, order_column: str | None) -> DataFrame:
    keep = ["user_id", "timestamp"] + ([order_column] if order_column else [])
    if isinstance(titles, int):
        return events.select(*keep, F.col("code").cast("int"))
    # The titles trained on: one row each, small enough to broadcast to every event partition.
    rows = list(zip(titles.ids.cast(pa.string()).to_pylist(), titles.codes.astype(int).tolist()))
    mapping = spark.createDataFrame(rows, "content_id string, code int")
    return events.join(F.broadcast(mapping), "content_id").select(*keep, "code")


def _popularity(coded: DataFrame, title_count: int) -> tuple[np.ndarray, int]:
    counts = coded.groupBy("code").agg(F.count(F.lit(1)).alias("n")).toArrow()
    popularity = np.zeros(title_count, dtype=np.float64)
    popularity[counts.column("code").to_numpy()] = counts.column("n").to_numpy()
    total = int(popularity.sum())
    return popularity / max(popularity.max(initial=0.0), 1.0), total


def _model(popularity: np.ndarray, table: pa.Table, params: FitParams, source: str, target: str) -> NextTitleModel:
    title_count = len(popularity)
    sources = table.column(source).to_numpy().astype(np.int64)
    order = np.lexsort((table.column("rank").to_numpy(), sources))
    offsets = np.zeros(title_count + 1, dtype=np.int64)
    np.cumsum(np.bincount(sources, minlength=title_count), out=offsets[1:])
    return NextTitleModel(popularity, offsets, table.column(target).to_numpy()[order],
                          table.column("score").to_numpy()[order],
                          weights=PositionWeights(params.window, params.decay),
                          popularity_weight=params.popularity_weight, params=params.recorded())


def _build(coded: DataFrame, params: FitParams, counted: tuple[np.ndarray, int],
           order_column: str | None) -> tuple[NextTitleModel, int]:
    """The model of ``params`` from ``coded``, whose ``_popularity`` is ``counted``."""
    popularity, n_events = counted
    title_count = len(popularity)
    if params.model == "transitions":
        table = next_title_candidates(coded.withColumnRenamed("code", "content_id"), params.top_n,
                                      order_column=order_column).toArrow()
        return _model(popularity, table, params, "source_id", "target_id"), n_events
    with _timed("neighbour table"):
        (table,) = _neighbour_tables(coded, [params], title_count, order_column)
    return _model(popularity, table, params, "a", "b"), n_events


def _neighbour_tables(coded: DataFrame, points: Sequence[FitParams], title_count: int,
                      order_column: str | None) -> list[pa.Table]:
    """The top-n neighbour table of every parameter point, all from one pass over the events:
    the pair sums are counted once for every γ of ``points``, then ranked for each point.
    ``points`` share max_lead, max_user_titles and top_n."""
    first = points[0]
    gammas = sorted({p.gamma for p in points})
    sequences = user_sequences(coded, order_column).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with_cosine = any(p.eta != 0 for p in points)
        audience = audiences(sequences, title_count, first.max_user_titles) if with_cosine else np.ones(title_count)
        sums = pair_sums(sequences, gammas, first.max_lead, first.max_user_titles, with_cosine)
        ranked = ranked_neighbours(sums, audience, [(gammas.index(p.gamma), p.back, p.eta) for p in points],
                                   first.top_n).toArrow()
    finally:
        sequences.unpersist()
    point_of_row = ranked.column("point").to_numpy()
    return [ranked.filter(pa.array(point_of_row == i)) for i in range(len(points))]


def _tune(coded: DataFrame, base: FitParams, grid: Sequence[dict], title_count: int, order_column: str | None,
          histories: Sequence[np.ndarray], targets: np.ndarray, keep_model: bool):
    """Score every grid point on (histories, targets) with a model built from ``coded``; the
    best by NDCG@10 (the first of equals), its model if ``keep_model``, every point's metrics,
    and the seconds the tables took."""
    popularity, n_events = _popularity(coded, title_count)
    points = [base.with_point(point) for point in grid]
    tables_started = time.monotonic()
    with _timed(f"neighbour tables of {len(points)} grid points"):
        tables = _neighbour_tables(coded, points, title_count, order_column)
    table_seconds = time.monotonic() - tables_started
    tried, best, best_model = [], None, None
    with _timed("scoring the grid on the holdout"):
        for point, params, table in zip(grid, points, tables):
            model = _model(popularity, table, params, "a", "b")
            metrics = evaluate_scorer(model.dense_scores, histories, targets, title_count)
            tried.append({**point, **{k: float(v) for k, v in metrics.items() if k != "users"}})
            if best is None or metrics["ndcg@10"] > best[1]["ndcg@10"]:
                best = (params, metrics)
                best_model = model if keep_model else None
    holdout = {"users": int(best[1]["users"]), "hr@10": float(best[1]["hr@10"]), "ndcg@10": float(best[1]["ndcg@10"])}
    return best_model, best[0], tried, holdout, n_events, table_seconds


def _user_sample(coded: DataFrame, total: int, max_events: int, seed: int) -> DataFrame:
    """The events (``total`` of them) of a seeded sample of users holding about ``max_events``
    events (all of them when there are no more). Whole users, so every sampled history stays
    complete."""
    if total <= max_events:
        return coded
    buckets = 1_000_000
    kept = max(1, int(buckets * max_events / total))
    log.info("tuning on a sample of users: about %d of %d events", max_events, total)
    return coded.where(F.pmod(F.xxhash64("user_id", F.lit(seed)), F.lit(buckets)) < kept)


def _inner_holdout(coded: DataFrame, order_column: str | None, max_users: int, seed: int):
    """The events with ``pos`` (persisted: unpersist when done); those without each user's
    last one (users with at least 3 events); and the histories and held-out targets of up to
    ``max_users`` of those users (a seeded hash order)."""
    events = ordered(coded, order_column).withColumn("n", F.count(F.lit(1)).over(Window.partitionBy("user_id")))
    events = events.persist()
    held = (F.col("pos") == F.col("n")) & (F.col("n") >= MIN_HOLDOUT_EVENTS)
    train_part = events.where(~held).select("user_id", "code", "timestamp", "pos")
    sampled = (events.where(held).orderBy(F.xxhash64("user_id", F.lit(seed)), "user_id").limit(max_users)
               .select("user_id", F.col("code").alias("target")))
    targets_table = sampled.toArrow()
    rows = train_part.join(F.broadcast(sampled.select("user_id")), "user_id").select("user_id", "pos", "code").toArrow()
    users = targets_table.column("user_id").to_pylist()
    index = {user: i for i, user in enumerate(users)}
    user_index = np.array([index[u] for u in rows.column("user_id").to_pylist()], dtype=np.int64)
    order = np.lexsort((rows.column("pos").to_numpy(), user_index))
    codes = rows.column("code").to_numpy()[order].astype(np.int32)
    bounds = np.r_[0, np.cumsum(np.bincount(user_index, minlength=len(users)))]
    histories = [codes[bounds[i]: bounds[i + 1]] for i in range(len(users))]
    return events, train_part, histories, targets_table.column("target").to_numpy().astype(np.int64)
