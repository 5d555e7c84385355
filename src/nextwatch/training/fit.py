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

With ``sequence`` options (and PyTorch), a sequence model (``sequence.py``) is trained beside the
neighbour table: first on the tuning events, keeping its best epoch on the holdout, where its
blend weight λ is chosen from ``SEQUENCE_WEIGHTS`` (0 keeps the table alone); then, when λ > 0,
again on all the events for that many epochs. ``FitParams`` records λ and the epochs, so a fit
with given params (``evaluate``'s final one) trains the same way without a holdout.

``deadline`` (a ``time.monotonic()`` value) is the run's time box: the table is always built;
the network's first training gets half of what is left once the time of a final table build is
set aside, its second training the rest. With under ``MIN_SEQUENCE_SECONDS`` for a training,
the table is kept alone, and the report says so.
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

from ..evaluation.metrics import evaluate_scorer, rank_block, summarise
from ..model import NextTitleModel, PositionWeights
from ..model.next_title import standardised_rows, unwatched_mask
from .neighbours import audiences, ordered, pair_sums, ranked_neighbours, user_sequences
from .sequence import SequenceOptions, train_sequence_model
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
# Less time than this left for one training of the network: the table alone (it would not learn).
MIN_SEQUENCE_SECONDS = 30.0
# λ of z(table) + λ z(sequence): 0 is the table alone; the largest leave the table to break ties.
SEQUENCE_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


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
    sequence: dict | None = None  # the sequence model's tuning: epochs, holdout curve, λ tried


def fit_next_title(spark: SparkSession, events: DataFrame, titles: TitleCodes | int,
                   params: FitParams | None = None, tune_on: tuple[Sequence[np.ndarray], np.ndarray] | None = None,
                   grid: Sequence[dict] = GRID, order_column: str | None = None, base: FitParams = FitParams(),
                   holdout_users: int = HOLDOUT_USERS, tuning_events: int = TUNING_EVENTS,
                   seed: int = 0, sequence: SequenceOptions | None = None,
                   deadline: float | None = None) -> tuple[NextTitleModel, FitReport]:
    """Build a model from ``events`` (``user_id``, ``content_id`` or ``code``, ``timestamp``,
    optionally ``order_column`` for timestamp ties).

    ``titles``: the codes of the content ids (events with ``content_id``), or the title count
    when the events carry ``code`` already. ``params`` given: built with those, no tuning.
    ``params`` None: ``base`` with the best ``grid`` point by NDCG@10, on ``tune_on``
    (histories, targets as title codes; the model is built from all ``events``) or else on an
    inner holdout of each user's last event (the final model is then rebuilt from all events);
    beyond ``tuning_events`` events the holdout is taken from a seeded sample of users with
    about that many events. ``sequence``: also train the sequence model, within ``deadline``
    (module docstring).
    """
    started = time.monotonic()
    title_count = titles if isinstance(titles, int) else titles.title_count
    coded = _with_codes(spark, events, titles, order_column)
    if params is not None or base.model == "transitions":
        chosen = params or base
        model, n_events = _build(coded, chosen, _popularity(coded, title_count), order_column)
        if sequence is not None and chosen.sequence_weight > 0:
            model = _with_sequence(model, coded, order_column, chosen, sequence, deadline)
        return model, FitReport(chosen, None, [], n_events, time.monotonic() - started)

    sequence_tuning = None
    if tune_on is not None:
        histories, targets = tune_on
        targets = np.asarray(targets)
        model, chosen, tried, holdout, n_events = _tune(coded, base, grid, title_count, order_column, histories,
                                                        targets, keep_model=True)
        if sequence is not None:
            chosen, sequence_tuning, sequence_model = _tune_sequence(
                model, _histories(coded, order_column), histories, targets, chosen, sequence,
                _first_budget(sequence, deadline, time.monotonic() - started))
            model = _attached(model, sequence_model, chosen)
    else:
        with _timed("holdout split"):
            counted = _popularity(coded, title_count)  # the final build's, and the sample's total
            sample = _user_sample(coded, counted[1], tuning_events, seed)
            positioned, train_part, histories, targets = _inner_holdout(sample, order_column, holdout_users, seed)
        try:
            if len(targets):
                holdout_model, chosen, tried, holdout, _ = _tune(train_part, base, grid, title_count, "pos",
                                                                 histories, targets, keep_model=sequence is not None)
                if sequence is not None:
                    chosen, sequence_tuning, _ = _tune_sequence(
                        holdout_model, _histories(train_part, "pos"), histories, targets, chosen, sequence,
                        _first_budget(sequence, deadline, time.monotonic() - started))
            else:  # nobody has enough events to hold one out: the defaults
                chosen, tried, holdout = base, [], None
        finally:
            positioned.unpersist()
        model, n_events = _build(coded, chosen, counted, order_column)
        if sequence is not None and chosen.sequence_weight > 0:
            model = _with_sequence(model, coded, order_column, chosen, sequence, deadline)
    return model, FitReport(chosen, holdout, tried, n_events, time.monotonic() - started, sequence_tuning)


def _histories(coded: DataFrame, order_column: str | None) -> list[np.ndarray]:
    """Every user's title codes in time order, on the driver (the sequence model trains there)."""
    with _timed("collecting histories"):
        table = user_sequences(coded, order_column).select("titles").toArrow()
        titles = table.column("titles").combine_chunks()
        codes = titles.values.to_numpy(zero_copy_only=False).astype(np.int64)
        offsets = titles.offsets.to_numpy()
        return [codes[offsets[i]: offsets[i + 1]] for i in range(len(offsets) - 1)]


def _first_budget(options: SequenceOptions, deadline: float | None, table_seconds: float) -> float:
    """Seconds for the network's first training: half of what the deadline leaves once a final
    table build (about as long as the table took so far) is set aside."""
    if deadline is None:
        return options.seconds
    return min(options.seconds, (deadline - time.monotonic() - table_seconds) / 2)


def _tune_sequence(table_model: NextTitleModel, train_histories: list[np.ndarray], histories, targets: np.ndarray,
                   chosen: FitParams, options: SequenceOptions, seconds: float):
    """Train the sequence model on ``train_histories`` within ``seconds``, keeping its best epoch
    on the holdout (``histories``, ``targets``), then choose λ there with ``table_model``: the
    params with λ and the epochs, what was tried, and the sequence model (None: no time)."""
    if seconds < MIN_SEQUENCE_SECONDS:
        log.warning("%.0f s left for the sequence model: training the table alone", max(seconds, 0.0))
        return chosen, {"skipped": f"{max(seconds, 0.0):.0f} s left of the run's time box"}, None
    with _timed("sequence model on the tuning events"):
        network, report = train_sequence_model(train_histories, table_model.title_count,
                                               dataclasses.replace(options, seconds=seconds),
                                               holdout=(histories, targets))
    with _timed("choosing the sequence model's weight"):
        by_weight = _blend_metrics(table_model, network, histories, targets, SEQUENCE_WEIGHTS)
    best = max(SEQUENCE_WEIGHTS, key=lambda w: (by_weight[w]["ndcg@10"], -w))  # equal: the smaller λ
    log.info("sequence weight %s chosen: holdout NDCG@10 %.4f (table alone %.4f)", best,
             by_weight[best]["ndcg@10"], by_weight[0.0]["ndcg@10"])
    tuning = {"epochs": report.epochs, "best_epoch": report.best_epoch, "stopped_by": report.stopped_by,
              "seconds": round(report.seconds, 1), "holdout_ndcg_by_epoch": [round(v, 5) for v in report.holdout_ndcg],
              "weights": [{"weight": w, "hr@10": m["hr@10"], "ndcg@10": m["ndcg@10"]} for w, m in by_weight.items()]}
    chosen = dataclasses.replace(chosen, sequence_weight=best, sequence_epochs=report.best_epoch if best > 0 else 0)
    return chosen, tuning, network


def _blend_metrics(table_model: NextTitleModel, network, histories, targets: np.ndarray, weights,
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


def _with_sequence(model: NextTitleModel, coded: DataFrame, order_column: str | None, params: FitParams,
                   options: SequenceOptions, deadline: float | None) -> NextTitleModel:
    """``model`` with a sequence model trained on all of ``coded`` for ``params.sequence_epochs``
    (fewer if the deadline comes first); ``model`` alone when there is no time left at all."""
    seconds = options.seconds if deadline is None else min(options.seconds, deadline - time.monotonic())
    if seconds < MIN_SEQUENCE_SECONDS:
        log.warning("%.0f s left for the sequence model: publishing the table alone", max(seconds, 0.0))
        return _attached(model, None, dataclasses.replace(params, sequence_weight=0.0, sequence_epochs=0))
    with _timed("sequence model on all the events"):
        network, _ = train_sequence_model(_histories(coded, order_column), model.title_count,
                                          dataclasses.replace(options, seconds=seconds),
                                          epochs=max(1, params.sequence_epochs))
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
    best by NDCG@10 (the first of equals), its model if ``keep_model``, every point's metrics."""
    popularity, n_events = _popularity(coded, title_count)
    points = [base.with_point(point) for point in grid]
    with _timed(f"neighbour tables of {len(points)} grid points"):
        tables = _neighbour_tables(coded, points, title_count, order_column)
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
    return best_model, best[0], tried, holdout, n_events


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
