"""The Spark job of the default next-title table: multi-step transitions in both directions,
row-scaled, plus co-watch cosine.

Input: events with ``user_id``, ``code`` (int title code), ``timestamp`` and optionally an
ordering column that breaks timestamp ties. The recipe, with ``γ`` (gamma), ``back`` and ``η``
(eta) the tuned parameters:

1. ``F_γ[a,b] = Σ_d count(a then b, d steps later) · γ^(d-1)`` for d = 1..``max_lead``, a != b;
2. ``C[a,b] = F_γ[a,b] + back · F_γ[b,a]``;
3. ``T[a,b] = C[a,b] / sqrt(Σ_b' C[a,b'])``;
4. ``cos[a,b] = users(a and b) / sqrt(users(a) · users(b))`` over each user's last
   ``max_user_titles`` distinct titles (which bounds the quadratic pairing);
5. ``N = T + η · cos``, the ``top_n`` strongest targets per source kept (ties: lower code),
   not renormalised after the cut.

The shape of the job: Spark collects each user's titles in order (one row per user); every
task, one per core, turns its users into pair sums with the NumPy kernels of
``pair_kernels.py`` (:func:`pair_sums`); Spark shuffles those rows by source title, and every
task of the next stage adds up the rows of its sources and ranks their targets for one or many
parameter points at once (:func:`ranked_neighbours`). Tuning therefore costs one ranking pass,
not one job per grid point. Only the top-n tables reach the driver.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from . import pair_kernels

# Pairs one task generates before it sums them: bounds a task's memory (about 40 bytes a pair).
PAIRS_PER_CHUNK = 8_000_000
# Distinct pairs a task sums before it sends them on (each row about 8 + 8 per value column
# bytes): 20M covers every pair of a 5,000-title catalog in one go and keeps a task of a much
# larger catalog within about 2 GB.
PAIRS_PER_TASK = 20_000_000


def ordered(events: DataFrame, order_column: str | None = None) -> DataFrame:
    """Events with ``pos``: the place of the event in its user's history (1 = oldest)."""
    order = [F.col("timestamp")] + ([F.col(order_column)] if order_column else [])
    return events.withColumn("pos", F.row_number().over(Window.partitionBy("user_id").orderBy(*order)))


def user_sequences(events: DataFrame, order_column: str | None = None) -> DataFrame:
    """``user_id``, ``titles``: each user's title codes in time order (ties by
    ``order_column``), one row per user."""
    order = [F.col("timestamp")] + ([F.col(order_column)] if order_column else [])
    watched = F.struct(*[c.alias(f"k{i}") for i, c in enumerate(order)], F.col("code").alias("code"))
    return events.groupBy("user_id").agg(F.array_sort(F.collect_list(watched)).alias("w")).select(
        "user_id", F.col("w.code").alias("titles"))


def audiences(sequences: DataFrame, title_count: int, max_user_titles: int) -> np.ndarray:
    """``users[t]``: how many users have title t among their last ``max_user_titles`` distinct
    titles (the co-watch cosine's audience)."""
    recent = F.slice(F.array_distinct(F.reverse("titles")), 1, max_user_titles)
    counts = (sequences.select(F.explode(recent).alias("code")).groupBy("code")
              .agg(F.count(F.lit(1)).alias("users")).toArrow())
    users = np.zeros(title_count, dtype=np.int64)
    users[counts.column("code").to_numpy()] = counts.column("users").to_numpy()
    return users


def pair_sums(sequences: DataFrame, gammas: Sequence[float], max_lead: int = 10, max_user_titles: int = 200,
              with_cosine: bool = True) -> DataFrame:
    """``key`` (a * PAIR_BASE + b), ``f<i>``, ``r<i>`` per γ of ``gammas`` and ``co``: the sums
    of :func:`pair_kernels.pair_sums`, each task's users summed inside the task. A pair may
    still have a row from every task: :func:`ranked_neighbours` adds them up."""
    gammas = [float(g) for g in gammas]
    value_columns = [f"{side}{i}" for i in range(len(gammas)) for side in ("f", "r")] + ["co"]
    schema = pa.schema([("key", pa.int64())] + [(name, pa.float64()) for name in value_columns])

    def count(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        task_sums = pair_kernels.SumAccumulator(PAIRS_PER_TASK)

        def handed_out() -> Iterator[pa.RecordBatch]:
            summed = task_sums.take()
            if summed is not None:
                yield from pa.Table.from_pydict(summed, schema=schema).to_batches(max_chunksize=1_000_000)

        for titles, offsets in _user_chunks(batches, max_lead, max_user_titles if with_cosine else 0):
            task_sums.add(pair_kernels.pair_sums(titles, offsets, gammas, max_lead, max_user_titles, with_cosine))
            if task_sums.full:
                yield from handed_out()
        yield from handed_out()

    # As many tasks as cores: every task sends each of its pairs once, so fewer, larger tasks
    # shuffle fewer rows.
    parallelism = sequences.sparkSession.sparkContext.defaultParallelism
    return sequences.select("titles").coalesce(parallelism).mapInArrow(count, _ddl(schema))


def ranked_neighbours(sums: DataFrame, audience: np.ndarray, points: Sequence[tuple[int, float, float]],
                      top_n: int) -> DataFrame:
    """``point``, ``a``, ``b``, ``score``, ``rank``: the ``top_n`` targets of every source for
    each (γ index, back, η) of ``points`` (see :func:`pair_kernels.top_neighbours`), from the
    per-task rows of :func:`pair_sums`."""
    points = [(int(g), float(back), float(eta)) for g, back, eta in points]
    schema = pa.schema([("point", pa.int32()), ("a", pa.int32()), ("b", pa.int32()), ("score", pa.float64()),
                        ("rank", pa.int32())])

    def rank(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        parts = [{name: batch.column(name).to_numpy() for name in batch.schema.names} for batch in batches]
        if not parts:
            return
        summed = pair_kernels.merge_sums(parts)
        if len(summed["key"]) == 0:
            return
        key = summed.pop("key")
        found = pair_kernels.top_neighbours(key, summed, audience, points, top_n)
        yield pa.RecordBatch.from_pydict(found, schema=schema)

    # Every row of a source lands in one task: the task adds up the sums the counting tasks
    # sent, sees complete rows of the table, and ranks them. Summing here in NumPy rather than
    # in a Spark aggregation keeps ten million pair groups out of the JVM's heap.
    by_source = sums.repartition(F.shiftright("key", 31))
    return by_source.mapInArrow(rank, _ddl(schema))


def _user_chunks(batches: Iterator[pa.RecordBatch], max_lead: int, max_user_titles: int):
    """Consecutive users of a task's batches as ``(titles, offsets)`` arrays, cut so that one
    chunk generates about ``PAIRS_PER_CHUNK`` pairs (a longer single user is one chunk)."""
    for batch in batches:
        lists = batch.column(0)
        offsets = lists.offsets.to_numpy().astype(np.int64)
        titles = lists.values.to_numpy().astype(np.int64)
        titles, offsets = titles[offsets[0]:offsets[-1]], offsets - offsets[0]
        lengths = np.diff(offsets)
        recent = np.minimum(lengths, max_user_titles)
        cost = np.cumsum(2 * lengths * max_lead + recent * recent)
        start = 0
        while start < len(lengths):
            done = cost[start - 1] if start else 0
            end = max(start + 1, int(np.searchsorted(cost, done + PAIRS_PER_CHUNK, side="right")))
            yield titles[offsets[start]:offsets[end]], offsets[start:end + 1] - offsets[start]
            start = end


def _ddl(schema: pa.Schema) -> str:
    names = {pa.int32(): "int", pa.int64(): "bigint", pa.float64(): "double"}
    return ", ".join(f"{field.name} {names[field.type]}" for field in schema)
