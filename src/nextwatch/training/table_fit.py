"""The table half of a fit: events with title codes in, a ``NextTitleModel`` table out, and the
table's recipe chosen on a holdout (``tune_table``).

The default table is ``neighbours.py``'s (multi-step transitions both ways, row-scaled, plus
co-watch cosine), scored over the user's last 10 titles weighted 0.6^i; ``"transitions"``
(P(next | title) over consecutive events, ``transitions.py``) is the original model, kept
selectable. Tuning counts the pair sums once for every γ of the grid and ranks every grid point
in the same pass, so the grid costs about one build, not twelve.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..evaluation.ranking_metrics import evaluate_scorer
from ..model import NextTitleModel, PositionWeights
from .neighbours import audiences, pair_sums, ranked_neighbours, user_sequences
from .params import FitParams
from .timing import timed
from .transitions import next_title_candidates


@dataclasses.dataclass(frozen=True)
class TitleCodes:
    """The code of every content id: ``ids[i]`` has code ``codes[i]``."""

    ids: pa.Array
    codes: np.ndarray

    @property
    def title_count(self) -> int:
        return int(self.codes.max()) + 1 if len(self.codes) else 0


@dataclasses.dataclass
class TableTuning:
    """What ``tune_table`` found: the best point's params and metrics, every point's, and the
    seconds the tables took (a measure of what one more build costs)."""

    params: FitParams
    holdout: dict  # users, hr@10, ndcg@10 of the chosen point
    tried: list[dict]  # every grid point with its metrics
    model: NextTitleModel | None  # the chosen point's model, when asked for
    events: int
    table_seconds: float


def with_codes(spark: SparkSession, events: DataFrame, titles: TitleCodes | int,
               order_column: str | None) -> DataFrame:
    """``events`` with each title's ``code`` (they carry it already when ``titles`` is a count)."""
    keep = ["user_id", "timestamp"] + ([order_column] if order_column else [])
    if isinstance(titles, int):
        return events.select(*keep, F.col("code").cast("int"))
    # The titles trained on: one row each, small enough to broadcast to every event partition.
    rows = list(zip(titles.ids.cast(pa.string()).to_pylist(), titles.codes.astype(int).tolist()))
    mapping = spark.createDataFrame(rows, "content_id string, code int")
    return events.join(F.broadcast(mapping), "content_id").select(*keep, "code")


def title_counts(coded: DataFrame, title_count: int) -> tuple[np.ndarray, int]:
    """Each title's events over the most watched title's (the model's popularity), and the total."""
    counts = coded.groupBy("code").agg(F.count(F.lit(1)).alias("n")).toArrow()
    popularity = np.zeros(title_count, dtype=np.float64)
    popularity[counts.column("code").to_numpy()] = counts.column("n").to_numpy()
    total = int(popularity.sum())
    return popularity / max(popularity.max(initial=0.0), 1.0), total


def build_table(coded: DataFrame, params: FitParams, counted: tuple[np.ndarray, int],
                order_column: str | None) -> tuple[NextTitleModel, int]:
    """The model of ``params`` from ``coded``, whose ``title_counts`` are ``counted``."""
    popularity, n_events = counted
    title_count = len(popularity)
    if params.model == "transitions":
        table = next_title_candidates(coded.withColumnRenamed("code", "content_id"), params.top_n,
                                      order_column=order_column).toArrow()
        return _model(popularity, table, params, "source_id", "target_id"), n_events
    with timed("neighbour table"):
        (table,) = _neighbour_tables(coded, [params], title_count, order_column)
    return _model(popularity, table, params, "a", "b"), n_events


def tune_table(coded: DataFrame, base: FitParams, grid: Sequence[dict], title_count: int, order_column: str | None,
               histories: Sequence[np.ndarray], targets: np.ndarray, keep_model: bool) -> TableTuning:
    """Score every grid point on (histories, targets) with a model built from ``coded``: the
    best by NDCG@10 (the first of equals), with its model if ``keep_model``."""
    popularity, n_events = title_counts(coded, title_count)
    points = [base.with_point(point) for point in grid]
    tables_started = time.monotonic()
    with timed(f"neighbour tables of {len(points)} grid points"):
        tables = _neighbour_tables(coded, points, title_count, order_column)
    table_seconds = time.monotonic() - tables_started
    tried, best, best_model = [], None, None
    with timed("scoring the grid on the holdout"):
        for point, params, table in zip(grid, points, tables):
            model = _model(popularity, table, params, "a", "b")
            metrics = evaluate_scorer(model.dense_scores, histories, targets, title_count)
            tried.append({**point, **{k: float(v) for k, v in metrics.items() if k != "users"}})
            if best is None or metrics["ndcg@10"] > best[1]["ndcg@10"]:
                best = (params, metrics)
                best_model = model if keep_model else None
    holdout = {"users": int(best[1]["users"]), "hr@10": float(best[1]["hr@10"]), "ndcg@10": float(best[1]["ndcg@10"])}
    return TableTuning(best[0], holdout, tried, best_model, n_events, table_seconds)


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
