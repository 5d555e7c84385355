"""Where training events come from: event files and the live event log, as one DataFrame.

Every source becomes rows of ``user_id`` (string), ``content_id`` (string), ``timestamp``
(double, unix seconds) and ``seq``: a sortable struct that puts rows with equal timestamps back
in the order they were written (source, then file, then position in the file). ``seq`` has to be
taken at read time, before any shuffle, because a shuffle forgets where a row came from.

Why ``seq`` is more than ``monotonically_increasing_id()``: that id only increases within a
Spark partition, and Spark packs file splits into partitions largest first, so two splits of
one big file can land in partitions in either order. The split's start offset
(``_metadata.file_block_start``) and the file's path restore the order between splits and
files; the id orders rows inside one split.

Rows missing any of the three fields, or whose timestamp is not a number, are skipped.
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

EVENT_COLUMNS = ("user_id", "content_id", "timestamp")
EVENT_SCHEMA = StructType(
    [
        StructField("user_id", StringType()),
        StructField("content_id", StringType()),
        StructField("timestamp", DoubleType()),
    ]
)
EVENT_LOG_SOURCE = "redis:event-log"
ARROW_BATCH_ROWS = 100_000  # rows of the event log turned into Arrow arrays at a time


def file_format(path: str) -> str:
    """The Spark reader for ``path``, from its name: ``.csv``, ``.jsonl``/``.json`` (JSON
    Lines), anything else (a ``.parquet`` file or a folder of Parquet files) is Parquet."""
    name = path.rstrip("/").lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".json")):
        return "json"
    return "parquet"


def read_event_file(spark: SparkSession, path: str, source_rank: int) -> DataFrame:
    """Events from one file or folder; ``source_rank`` orders it against the other sources."""
    if "://" not in path and not os.path.exists(path):
        raise FileNotFoundError(f"event file {path} does not exist")
    fmt = file_format(path)
    reader = spark.read.format(fmt)
    if fmt == "csv":
        # Header names, every column read as text: no inference pass over the data, and the
        # columns may come in any order. Types are fixed by the casts below.
        reader = reader.option("header", True)
    elif fmt == "json":
        # An explicit schema spares Spark a full pass to infer one; numeric ids in the JSON
        # are kept as their text.
        reader = reader.schema(EVENT_SCHEMA)
    frame = reader.load(path)
    missing = [c for c in EVENT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: event files need columns {', '.join(EVENT_COLUMNS)}; missing {', '.join(missing)}")
    seq = F.struct(
        F.lit(source_rank).alias("source"),
        F.col("_metadata.file_path").alias("file"),
        F.col("_metadata.file_block_start").alias("block"),
        F.monotonically_increasing_id().alias("row"),
    )
    return _typed(frame, seq)


def read_event_log(spark: SparkSession, events: Iterable[dict], source_rank: int) -> DataFrame | None:
    """The live events (``EventLog.read_all()``, oldest first) as a DataFrame, or None when
    there are none.

    They go through Arrow: columns are built a batch at a time (no per-row Python objects kept),
    and Spark ships Arrow batches to the JVM in order, one per partition, so the
    id taken here follows the stream's order. Unlike a temporary file on the driver, this also
    works when executors run on other machines.
    """
    batches = [batch for batch in _arrow_batches(events, ARROW_BATCH_ROWS) if batch.num_rows]
    if not batches:
        return None
    frame = spark.createDataFrame(pa.Table.from_batches(batches))
    seq = F.struct(
        F.lit(source_rank).alias("source"),
        F.lit("").alias("file"),
        F.lit(0).cast("long").alias("block"),
        F.monotonically_increasing_id().alias("row"),
    )
    return _typed(frame, seq)


def union_events(frames: list[DataFrame]) -> DataFrame:
    combined = frames[0]
    for frame in frames[1:]:
        combined = combined.unionByName(frame)
    return combined


def _typed(frame: DataFrame, seq: Column) -> DataFrame:
    # try_cast: a malformed value becomes null and the row is skipped, rather than failing a
    # job over millions of rows (Spark 4 casts strictly by default). A Parquet timestamp column
    # casts to its unix seconds.
    typed = frame.select(
        F.col("user_id").try_cast("string").alias("user_id"),
        F.col("content_id").try_cast("string").alias("content_id"),
        F.col("timestamp").try_cast("double").alias("timestamp"),
        seq.alias("seq"),
    )
    return typed.where(F.col("user_id").isNotNull() & F.col("content_id").isNotNull() & F.col("timestamp").isNotNull())


def _arrow_batches(events: Iterable[dict], size: int) -> Iterator[pa.RecordBatch]:
    schema = pa.schema([("user_id", pa.string()), ("content_id", pa.string()), ("timestamp", pa.float64())])
    users: list[str] = []
    contents: list[str] = []
    stamps: list[float] = []
    for event in events:
        users.append(event["user_id"])
        contents.append(event["content_id"])
        stamps.append(event["timestamp"])
        if len(users) == size:
            yield pa.record_batch([users, contents, stamps], schema=schema)
            users, contents, stamps = [], [], []
    yield pa.record_batch([users, contents, stamps], schema=schema)
