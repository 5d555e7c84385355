"""DataFrame transforms for the default next-title table: multi-step transitions in both
directions, row-scaled, plus co-watch cosine.

Input: events with ``user_id``, ``code`` (int title code), ``timestamp`` and optionally an
ordering column that breaks timestamp ties. The recipe, with ``γ`` (gamma), ``back`` and ``η``
(eta) the tuned parameters:

1. ``F_γ[a,b] = Σ_d count(a then b, d steps later) · γ^(d-1)`` for d = 1..``max_lead``, a != b;
2. ``C[a,b] = F_γ[a,b] + back · F_γ[b,a]``;
3. ``T[a,b] = C[a,b] / sqrt(Σ_b' C[a,b'])``;
4. ``cos[a,b] = users(a and b) / sqrt(users(a) · users(b))`` over each user's last
   ``max_user_titles`` distinct titles (which bounds the quadratic self-join);
5. ``N = T + η · cos``, the ``top_n`` strongest targets per source kept (ties: lower code),
   not renormalised after the cut.

:func:`pair_aggregates` builds everything that does not depend on the parameters once, for
every γ of a grid, as one cached DataFrame; :func:`neighbour_table` then turns it into one
table per parameter point with a single pass and a per-source top-n. Only the top-n tables are
small enough to collect.
"""

from __future__ import annotations

from typing import Iterable

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


PAIR_BASE = 1 << 31  # pair key = a * PAIR_BASE + b; title codes are non-negative ints


def _unkeyed() -> list:
    return [F.shiftright("key", 31).cast("int").alias("a"), F.col("key").bitwiseAND(PAIR_BASE - 1).cast("int").alias("b")]


def gamma_column(gamma: float) -> str:
    return "g" + repr(float(gamma)).replace(".", "_").replace("-", "m")


def ordered(events: DataFrame, order_column: str | None = None) -> DataFrame:
    """Events with ``pos``: the place of the event in its user's history (1 = oldest)."""
    order = [F.col("timestamp")] + ([F.col(order_column)] if order_column else [])
    return events.withColumn("pos", F.row_number().over(Window.partitionBy("user_id").orderBy(*order)))


def user_sequences(events: DataFrame, order_column: str | None = None) -> DataFrame:
    """``user_id``, ``titles``: each user's title codes in time order (ties by
    ``order_column``). One row per user: the pair generators below run inside a row, so
    neither needs a window or a self-join (both several times slower here)."""
    order = [F.col("timestamp")] + ([F.col(order_column)] if order_column else [])
    watched = F.struct(*[c.alias(f"k{i}") for i, c in enumerate(order)], F.col("code").alias("code"))
    return events.groupBy("user_id").agg(F.array_sort(F.collect_list(watched)).alias("w")).select(
        "user_id", F.col("w.code").alias("titles"))


def lead_pairs(sequences: DataFrame, gammas: list[float], max_lead: int) -> DataFrame:
    """``a``, ``b`` and, per γ, ``Σ γ^(d-1)`` over every time b came d <= ``max_lead`` steps
    after a in one user's titles (a != b)."""
    titles = F.col("titles")
    steps = F.flatten(F.transform(
        F.sequence(F.lit(1), F.greatest(F.size(titles) - 1, F.lit(1))),
        lambda i: F.transform(
            F.sequence(F.lit(1), F.least(F.lit(max_lead), F.greatest(F.size(titles) - i, F.lit(1)))),
            lambda d: F.struct(F.element_at(titles, i).alias("a"),
                               F.element_at(titles, i + d).alias("b"), d.alias("d")))))
    pairs = sequences.where(F.size(titles) > 1).select(F.explode(steps).alias("p")).select("p.a", "p.b", "p.d")
    pairs = pairs.where(F.col("b").isNotNull() & (F.col("a") != F.col("b")))
    # One long key per pair: a single-column hash aggregation is markedly faster than (a, b).
    keyed = pairs.select((F.col("a").cast("long") * PAIR_BASE + F.col("b")).alias("key"), "d")
    summed = keyed.groupBy("key").agg(*[F.sum(F.pow(F.lit(g), F.col("d") - 1)).alias(gamma_column(g)) for g in gammas])
    return summed.select(*_unkeyed(), *[gamma_column(g) for g in gammas])


def cowatch_cosine(sequences: DataFrame, max_user_titles: int) -> DataFrame:
    """``a``, ``b``, ``cos`` over distinct (user, title), each user cut to the titles of their
    last ``max_user_titles`` distinct watches."""
    recent = sequences.select(
        "user_id", F.slice(F.array_distinct(F.reverse("titles")), 1, max_user_titles).alias("kept"))
    users = recent.select(F.explode("kept").alias("code")).groupBy("code").agg(F.count(F.lit(1)).alias("users"))
    kept = F.col("kept")
    # Each unordered pair once (a < b) as one long key; mirrored after the count.
    pairs = F.flatten(F.transform(kept, lambda x: F.transform(F.filter(kept, lambda y: y > x),
                                                              lambda y: x.cast("long") * PAIR_BASE + y)))
    counted = (recent.where(F.size(kept) > 1).select(F.explode(pairs).alias("key"))
               .groupBy("key").agg(F.count(F.lit(1)).alias("co")).select(*_unkeyed(), "co"))
    both = counted.unionByName(counted.select(F.col("b").alias("a"), F.col("a").alias("b"), "co"))
    users_a = users.select(F.col("code").alias("a"), F.col("users").alias("users_a"))
    users_b = users.select(F.col("code").alias("b"), F.col("users").alias("users_b"))
    return (both.join(F.broadcast(users_a), "a").join(F.broadcast(users_b), "b")
            .select("a", "b", (F.col("co") / F.sqrt(F.col("users_a") * F.col("users_b"))).alias("cos")))


def pair_aggregates(events: DataFrame, gammas: Iterable[float], max_lead: int = 10, max_user_titles: int = 200,
                    with_cosine: bool = True, order_column: str | None = None) -> DataFrame:
    """One row per (a, b) with any transition or co-watch: for every γ, ``f`` = F_γ[a,b],
    ``r`` = F_γ[b,a], and the row sums ``sf``, ``sr`` of a; and ``cos``. Persisted: call
    ``unpersist()`` when done."""
    gammas = sorted(set(float(g) for g in gammas))
    sequences = user_sequences(events, order_column).persist(StorageLevel.MEMORY_AND_DISK)
    weighted = lead_pairs(sequences, gammas, max_lead).persist(StorageLevel.MEMORY_AND_DISK)
    names = [gamma_column(g) for g in gammas]
    columns = [p + c for c in names for p in ("f", "r")] + ["cos"]

    def part(frame: DataFrame, a: str, b: str, given: dict) -> DataFrame:
        return frame.select(F.col(a).alias("a"), F.col(b).alias("b"),
                            *[(given[c] if c in given else F.lit(0.0)).cast("double").alias(c) for c in columns])

    # F[a,b] forward, F[b,a] as the reverse of (a, b), cos: one union and one aggregation
    # instead of a full outer join.
    parts = [part(weighted, "a", "b", {"f" + c: F.col(c) for c in names}),
             part(weighted, "b", "a", {"r" + c: F.col(c) for c in names})]
    if with_cosine:
        parts.append(part(cowatch_cosine(sequences, max_user_titles), "a", "b", {"cos": F.col("cos")}))
    union = parts[0]
    for frame in parts[1:]:
        union = union.unionByName(frame)
    table = union.groupBy("a", "b").agg(*[F.sum(c).alias(c) for c in columns])
    # Row sums of a: Σ_b F[a,b] and Σ_b F[b,a]; one row per title, so broadcast.
    out_sums = weighted.groupBy("a").agg(*[F.sum(c).alias("sf" + c) for c in names])
    in_sums = weighted.groupBy(F.col("b").alias("a")).agg(*[F.sum(c).alias("sr" + c) for c in names])
    sums = out_sums.join(in_sums, "a", "full_outer")
    table = table.join(F.broadcast(sums), "a", "left").na.fill(0.0).persist(StorageLevel.MEMORY_AND_DISK)
    table.count()  # materialised now, so its inputs can go
    weighted.unpersist()
    sequences.unpersist()
    return table


def neighbour_table(aggregates: DataFrame, gamma: float, back: float, eta: float, top_n: int = 100) -> DataFrame:
    """``a``, ``b``, ``score``, ``rank`` (1 = strongest): the ``top_n`` best targets of every
    source by ``N = T + η·cos``; ties go to the lower target code; zero scores are no
    neighbours."""
    c = gamma_column(gamma)
    row_total = F.col("sf" + c) + F.lit(float(back)) * F.col("sr" + c)
    pair = F.col("f" + c) + F.lit(float(back)) * F.col("r" + c)
    scaled = F.when(row_total > 0, pair / F.sqrt(row_total)).otherwise(F.lit(0.0))
    scored = aggregates.select("a", "b", (scaled + F.lit(float(eta)) * F.col("cos")).alias("score"))
    strongest_first = Window.partitionBy("a").orderBy(F.col("score").desc(), F.col("b").asc())
    ranked = scored.where(F.col("score") > 0).withColumn("rank", F.row_number().over(strongest_first))
    return ranked.where(F.col("rank") <= top_n)
