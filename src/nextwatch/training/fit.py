"""Fitting a next-title model with Spark, without Redis: events in, a ``NextTitleModel`` out.

Two variants behind one name (``FitParams.model``):

- ``"neighbours"`` (the default): the table of ``neighbours.py`` (multi-step transitions both
  ways, row-scaled, plus co-watch cosine), scored over the last 10 titles weighted 0.6^i.
  Its parameters (γ, back, η) are tuned on a holdout: by default each user's last event (users
  with at least 3), or the (histories, targets) the caller gives (``evaluate`` gives the
  protocol's validation targets). The parameter-free aggregates are built once and every grid
  point is one pass over them; the final model is then built from all the events.
- ``"transitions"``: P(next | title) over consecutive events (``transitions.py``), the
  original model, kept selectable.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from ..evaluation.metrics import evaluate_scorer
from ..model import NextTitleModel, PositionWeights
from .neighbours import neighbour_table, ordered, pair_aggregates
from .transitions import next_title_candidates

MODELS = ("neighbours", "transitions")
GRID: tuple[dict, ...] = tuple({"gamma": g, "back": b, "eta": e}
                               for g in (0.7, 0.85) for b in (0.0, 0.25, 0.5) for e in (0.0, 0.3))
HOLDOUT_USERS = 10_000  # users sampled for the inner holdout
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


def fit_next_title(spark: SparkSession, events: DataFrame, titles: TitleCodes | int,
                   params: FitParams | None = None, tune_on: tuple[Sequence[np.ndarray], np.ndarray] | None = None,
                   grid: Sequence[dict] = GRID, order_column: str | None = None, base: FitParams = FitParams(),
                   holdout_users: int = HOLDOUT_USERS, seed: int = 0) -> tuple[NextTitleModel, FitReport]:
    """Build a model from ``events`` (``user_id``, ``content_id`` or ``code``, ``timestamp``,
    optionally ``order_column`` for timestamp ties).

    ``titles``: the codes of the content ids (events with ``content_id``), or the title count
    when the events carry ``code`` already. ``params`` given: built with those, no tuning.
    ``params`` None: ``base`` with the best ``grid`` point by NDCG@10, on ``tune_on``
    (histories, targets as title codes; the model is built from all ``events``) or else on an
    inner holdout of each user's last event (the final model is then rebuilt from all events).
    """
    started = time.monotonic()
    title_count = titles if isinstance(titles, int) else titles.title_count
    coded = _with_codes(spark, events, titles, order_column)
    if params is not None or base.model == "transitions":
        chosen = params or base
        model, n_events = _build(coded, chosen, title_count, order_column)
        return model, FitReport(chosen, None, [], n_events, time.monotonic() - started)

    if tune_on is not None:
        histories, targets = tune_on
        model, chosen, tried, holdout, n_events = _tune(coded, base, grid, title_count, order_column, histories,
                                                        np.asarray(targets), keep_model=True)
    else:
        positioned, train_part, histories, targets = _inner_holdout(coded, order_column, holdout_users, seed)
        try:
            if len(targets):
                _, chosen, tried, holdout, _ = _tune(train_part, base, grid, title_count, "pos", histories, targets,
                                                     keep_model=False)
            else:  # nobody has enough events to hold one out: the defaults
                chosen, tried, holdout = base, [], None
        finally:
            positioned.unpersist()
        model, n_events = _build(coded, chosen, title_count, order_column)
    return model, FitReport(chosen, holdout, tried, n_events, time.monotonic() - started)


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


def _build(coded: DataFrame, params: FitParams, title_count: int, order_column: str | None) -> tuple[NextTitleModel, int]:
    popularity, n_events = _popularity(coded, title_count)
    if params.model == "transitions":
        table = next_title_candidates(coded.withColumnRenamed("code", "content_id"), params.top_n,
                                      order_column=order_column).toArrow()
        return _model(popularity, table, params, "source_id", "target_id"), n_events
    aggregates = pair_aggregates(coded, [params.gamma], params.max_lead, params.max_user_titles,
                                 with_cosine=params.eta != 0, order_column=order_column)
    try:
        table = neighbour_table(aggregates, params.gamma, params.back, params.eta, params.top_n).toArrow()
    finally:
        aggregates.unpersist()
    return _model(popularity, table, params, "a", "b"), n_events


def _tune(coded: DataFrame, base: FitParams, grid: Sequence[dict], title_count: int, order_column: str | None,
          histories: Sequence[np.ndarray], targets: np.ndarray, keep_model: bool):
    """Score every grid point on (histories, targets) with a model built from ``coded``; the
    best by NDCG@10 (the first of equals), its model if ``keep_model``, every point's metrics."""
    popularity, n_events = _popularity(coded, title_count)
    aggregates = pair_aggregates(coded, [p["gamma"] for p in grid], base.max_lead, base.max_user_titles,
                                 with_cosine=any(p.get("eta", base.eta) for p in grid), order_column=order_column)
    tried, best, best_model = [], None, None
    try:
        for point in grid:
            params = base.with_point(point)
            table = neighbour_table(aggregates, params.gamma, params.back, params.eta, params.top_n).toArrow()
            model = _model(popularity, table, params, "a", "b")
            metrics = evaluate_scorer(model.dense_scores, histories, targets, title_count)
            tried.append({**point, **{k: float(v) for k, v in metrics.items() if k != "users"}})
            if best is None or metrics["ndcg@10"] > best[1]["ndcg@10"]:
                best = (params, metrics)
                best_model = model if keep_model else None
    finally:
        aggregates.unpersist()
    holdout = {"users": int(best[1]["users"]), "hr@10": float(best[1]["hr@10"]), "ndcg@10": float(best[1]["ndcg@10"])}
    return best_model, best[0], tried, holdout, n_events


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
