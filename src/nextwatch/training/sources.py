"""Where training events come from: event files and the live event log, as one DataFrame.

Every source becomes rows of ``user_id`` (string), ``content_id`` (string), ``timestamp``
(double, unix seconds) and ``seq``: a sortable struct that puts rows with equal timestamps back
in the order they were written (source, then file, then position in the file). ``seq`` has to be
taken at read time, before any shuffle, because a shuffle forgets where a row came from.

Why ``seq`` is more than ``monotonically_increasing_id()``: that id only increases within a
Spark partition, and Spark packs file splits into partitions largest first, so the files of a
folder are not read in name order (tests/test_training.py shows it). The file's path and the
split's start offset (``_metadata.file_block_start``) restore the order between files and
splits; the id orders rows inside one split.

Rows missing any of the three fields, or whose timestamp is not a number, are skipped.

An event that is both in the archive (``nextwatch archive``) and still in the live event log
carries the same ``shard`` and ``stream_id`` in both (stream ids are unique only within a
shard's stream); :func:`union_events` keeps one of them, so training counts every accepted
event once. Events from other files have neither."""

from __future__ import annotations

import os
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
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
ARROW_BATCH_ROWS = 100_000  # event log rows held in memory at a time (one Parquet row group)


def file_format(path: str) -> str:
    """The Spark reader for ``path``, from its name: ``.csv``, ``.jsonl``/``.json`` (JSON
    Lines), anything else (a ``.parquet`` file or a folder of Parquet files) is Parquet."""
    name = path.rstrip("/").lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".json")):
        return "json"
    return "parquet"


def read_event_file(spark: SparkSession, path: str, source_rank: int) -> DataFrame | None:
    """Events from one file or folder; ``source_rank`` orders it against the other sources.
    None for a folder that holds no event file yet (a fresh archive)."""
    if "://" not in path and not os.path.exists(path):
        raise FileNotFoundError(f"event file {path} does not exist")
    fmt = file_format(path)
    if fmt == "parquet" and os.path.isdir(path) and not _has_parquet_files(path):
        return None
    reader = spark.read.format(fmt)
    if fmt == "csv":
        # Header names, every column read as text: no inference pass over the data, and the
        # columns may come in any order. Types are fixed by the casts below.
        reader = reader.option("header", True)
    elif fmt == "json":
        # An explicit schema spares Spark a full pass to infer one; numeric ids in the JSON
        # are kept as their text.
        reader = reader.schema(EVENT_SCHEMA)
    if fmt == "parquet":
        # Archive files written before impressions existed lack ``kind``: merge the files'
        # schemas, or Spark could take one without it for all of them.
        reader = reader.option("mergeSchema", True)
    frame = reader.load(path)
    missing = [c for c in EVENT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: event files need columns {', '.join(EVENT_COLUMNS)}; missing {', '.join(missing)}")
    if "kind" in frame.columns:  # impressions are archived beside watches; training learns from watches
        frame = frame.where(F.col("kind").isNull() | (F.col("kind") == "watch"))
    # try_cast: a malformed value becomes null and the row is skipped, rather than failing a
    # job over millions of rows (Spark 4 casts strictly by default). A Parquet timestamp
    # column casts to its unix seconds.
    events = frame.select(
        F.col("user_id").try_cast("string").alias("user_id"),
        F.col("content_id").try_cast("string").alias("content_id"),
        F.col("timestamp").try_cast("double").alias("timestamp"),
        (F.col("stream_id") if "stream_id" in frame.columns else F.lit(None)).cast("string").alias("stream_id"),
        (F.col("shard") if "shard" in frame.columns else F.lit(None)).cast("int").alias("shard"),
        F.struct(
            F.lit(source_rank).alias("source"),
            F.col("_metadata.file_path").alias("file"),
            F.col("_metadata.file_block_start").alias("block"),
            F.monotonically_increasing_id().alias("row"),
        ).alias("seq"),
    )
    return events.where(F.col("user_id").isNotNull() & F.col("content_id").isNotNull() & F.col("timestamp").isNotNull())


def write_event_log(events: Iterable[dict], path: str) -> int:
    """Write the live events (``EventLog.read_all()``, oldest first per shard, each with its
    shard and stream id) to a Parquet file at ``path``, to be read back with
    :func:`read_event_file`; returns how many were written (no file is written for none).

    Why a file: handing a full log (~1M events) to ``spark.createDataFrame`` keeps every row in
    the driver's heap and inside each task, and ran a 1 GiB driver out of memory; a file is read
    in streaming fashion like any other source, and the writer here holds one batch at a time.
    The file must be readable by the executors: true for local mode and for a standalone cluster
    on this machine. For executors elsewhere, archive the log to shared storage and train on
    that with ``include_event_log=False``.
    """
    written = 0
    writer: pq.ParquetWriter | None = None
    try:
        for batch in _arrow_batches(events, ARROW_BATCH_ROWS):
            if batch.num_rows == 0:
                continue
            if writer is None:
                writer = pq.ParquetWriter(path, batch.schema)
            writer.write_batch(batch)  # row groups in stream order, so the file keeps it
            written += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    return written


def union_events(frames: list[DataFrame]) -> DataFrame:
    """All sources as one DataFrame, each logged event (``shard``, ``stream_id``) kept once."""
    combined = frames[0]
    for frame in frames[1:]:
        combined = combined.unionByName(frame)
    if len(frames) == 1:
        return combined
    logged = combined.where(F.col("stream_id").isNotNull())
    first_copy = Window.partitionBy("shard", "stream_id").orderBy("seq")
    deduplicated = (
        logged.withColumn("copy", F.row_number().over(first_copy)).where(F.col("copy") == 1).drop("copy")
    )
    return combined.where(F.col("stream_id").isNull()).unionByName(deduplicated)


def _has_parquet_files(folder: str) -> bool:
    for _root, _dirs, files in os.walk(folder):
        if any(name.endswith(".parquet") and not name.startswith(".") for name in files):
            return True
    return False


def _arrow_batches(events: Iterable[dict], size: int) -> Iterator[pa.RecordBatch]:
    schema = pa.schema([("user_id", pa.string()), ("content_id", pa.string()), ("timestamp", pa.float64()),
                        ("stream_id", pa.string()), ("shard", pa.int32())])
    columns: tuple[list, ...] = tuple([] for _ in schema.names)
    for event in events:
        if event.get("kind", "watch") != "watch":
            continue  # impressions are logged beside watches; training learns from watches
        for column, field in zip(columns, schema.names):
            column.append(event[field])
        if len(columns[0]) == size:
            yield pa.record_batch(list(columns), schema=schema)
            columns = tuple([] for _ in schema.names)
    yield pa.record_batch(list(columns), schema=schema)
