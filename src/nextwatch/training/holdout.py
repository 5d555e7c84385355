"""The inner holdout a fit tunes on when the caller gives none: each user's last event held
out (users with at least ``MIN_HOLDOUT_EVENTS``), up to ``HOLDOUT_USERS`` of them scored.

Beyond ``TUNING_EVENTS`` events the holdout comes from a seeded sample of whole users holding
about that many: tuning builds the table once per grid point and trains the network for many
epochs, so its cost stays bounded whatever the data's size; only the final table grows with it.
"""

from __future__ import annotations

import logging

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from .neighbours import ordered

log = logging.getLogger(__name__)

HOLDOUT_USERS = 10_000  # users sampled for the inner holdout
TUNING_EVENTS = 2_000_000
MIN_HOLDOUT_EVENTS = 3


def user_sample(coded: DataFrame, total: int, max_events: int, seed: int) -> DataFrame:
    """The events (``total`` of them) of a seeded sample of users holding about ``max_events``
    events (all of them when there are no more). Whole users, so every sampled history stays
    complete."""
    if total <= max_events:
        return coded
    buckets = 1_000_000
    kept = max(1, int(buckets * max_events / total))
    log.info("tuning on a sample of users: about %d of %d events", max_events, total)
    return coded.where(F.pmod(F.xxhash64("user_id", F.lit(seed)), F.lit(buckets)) < kept)


def inner_holdout(coded: DataFrame, order_column: str | None, max_users: int, seed: int):
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
