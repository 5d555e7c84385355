"""Pure DataFrame transforms from watch events to the tables a next-title model is built from.

Input: events with ``user_id``, ``content_id``, ``timestamp`` (unix seconds) and optionally an
ordering column that breaks timestamp ties (``seq`` from ``sources.py``: file order).
Everything runs as window functions and aggregations on the executors: no Python UDFs, no
events on the driver. Only the outputs, one row per title and at most ``top_n`` rows per title,
are small enough to collect.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def popularity(events: DataFrame) -> DataFrame:
    """``content_id``, ``events``: how many watch events each title has."""
    return events.groupBy("content_id").agg(F.count(F.lit(1)).alias("events"))


def consecutive_pairs(events: DataFrame, order_column: str | None = None) -> DataFrame:
    """``source_id``, ``target_id`` for every two titles one user watched one after the other.

    A user's events are ordered by timestamp, then by ``order_column``. Rewatching the same
    title (a -> a) is dropped: a title is no recommendation for itself, and a user pausing and
    resuming one title must not count as a transition.
    """
    order = [F.col("timestamp")] + ([F.col(order_column)] if order_column else [])
    per_user = Window.partitionBy("user_id").orderBy(*order)
    pairs = events.select(
        F.col("content_id").alias("source_id"),
        F.lead("content_id").over(per_user).alias("target_id"),
    )
    return pairs.where(F.col("target_id").isNotNull() & (F.col("source_id") != F.col("target_id")))


def next_title_candidates(events: DataFrame, top_n: int = 50, order_column: str | None = None) -> DataFrame:
    """The strongest next titles of every title: ``source_id``, ``target_id``, ``transitions``
    (count over all users), ``score`` and ``rank`` (1 = strongest).

    ``score`` is the share of the source's transitions that go to the target, P(target | source),
    computed over all of the source's targets *before* the list is cut to ``top_n``; so a
    kept row still says how likely that step is, and a cut list sums to less than 1.
    Equal counts rank by target id, so the same events always give the same table.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    counts = (
        consecutive_pairs(events, order_column)
        .groupBy("source_id", "target_id")
        .agg(F.count(F.lit(1)).alias("transitions"))
    )
    per_source = Window.partitionBy("source_id")
    strongest_first = per_source.orderBy(F.col("transitions").desc(), F.col("target_id").asc())
    ranked = counts.select(
        "source_id",
        "target_id",
        "transitions",
        (F.col("transitions") / F.sum("transitions").over(per_source)).alias("score"),
        F.row_number().over(strongest_first).alias("rank"),
    )
    return ranked.where(F.col("rank") <= top_n)
