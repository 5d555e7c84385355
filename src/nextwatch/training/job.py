"""The training job: watch events in, a published next-title model out.

Events come from files (an archive, an import) and from the live event log in Redis. Spark
counts title popularity and next-title transitions; the two small result tables are collected,
titles are given their catalog codes, and the model is published through ``store.models``,
which switches the current version atomically. Serving never sees a half-trained model: if
anything fails before ``publish`` nothing is written but new catalog codes, which are harmless.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession

from ..model import NextTitleModel, PositionWeights
from ..settings import Settings
from ..store import Store
from ..store.catalog import CatalogStore
from . import sources as event_sources
from .transitions import next_title_candidates, popularity

log = logging.getLogger(__name__)


class TrainingError(Exception):
    """Training cannot produce a model; the message says what to change."""


class NoTrainingEvents(TrainingError):
    """There is not a single usable watch event to train on."""


@dataclasses.dataclass(frozen=True)
class TrainingResult:
    version: int  # the published model version, now current
    events: int  # watch events trained on
    titles: int  # rows of the model: highest title code trained on + 1
    duration_seconds: float  # reading, counting and building; publishing not included


def train(
    settings: Settings,
    store: Store,
    spark: SparkSession,
    sources: list[str] | None = None,
    include_event_log: bool = True,
    top_n: int = 50,
    weights: PositionWeights = PositionWeights(),
) -> TrainingResult:
    """Train on ``sources`` (Parquet files or folders, ``.csv`` with a header, ``.jsonl``/
    ``.json`` JSON Lines; columns user_id, content_id, timestamp) plus, if
    ``include_event_log``, every event in the Redis event log; publish the model and make it
    current. Keeps ``top_n`` next titles per title. Raises NoTrainingEvents, publishing
    nothing, when there are no events.

    ``settings`` is taken so that every entry point has the same shape (the CLI passes what it
    loaded); the job itself needs nothing from it yet.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    started = time.monotonic()
    sources = list(sources or [])
    # The scratch folder holds the event log's snapshot until both Spark jobs have read it.
    with tempfile.TemporaryDirectory(prefix="nextwatch-train-") as scratch:
        read = [event_sources.read_event_file(spark, path, rank) for rank, path in enumerate(sources)]
        frames = [frame for frame in read if frame is not None]  # None: a folder with no files yet
        used_sources = list(sources)
        if include_event_log:
            snapshot = os.path.join(scratch, "event-log.parquet")
            if event_sources.write_event_log(store.events.read_all(), snapshot):
                # Ranked after the files: on equal timestamps, archived events came first.
                frames.append(event_sources.read_event_file(spark, snapshot, source_rank=len(sources)))
                used_sources.append(event_sources.EVENT_LOG_SOURCE)
        if not frames:
            raise _no_events(sources, include_event_log)
        # Both tables scan the events. Not cached: a second scan of Parquet costs less than
        # the cache, which ran a 1 GiB driver out of memory on a full (1M event) log.
        events = event_sources.union_events(frames)
        title_counts = popularity(events).toArrow()
        if title_counts.num_rows == 0:
            raise _no_events(sources, include_event_log)
        candidates = next_title_candidates(events, top_n, order_column="seq").toArrow()

    title_ids, codes, counts = assign_codes(store.catalog, title_counts)
    params = {"top_n": top_n, "window": weights.window, "decay": weights.decay}
    model = build_model(title_ids, codes, counts, candidates, weights, params)
    model.trained_at = time.time()
    duration = time.monotonic() - started
    n_events = int(counts.sum())
    version = store.models.publish(
        model,
        extra_meta={
            "events": str(n_events),
            "sources": json.dumps(used_sources),
            "duration_seconds": f"{duration:.3f}",
        },
    )
    log.info("published model %d: %d events, %d titles, %.1f s", version, n_events, model.title_count, duration)
    return TrainingResult(version=version, events=n_events, titles=model.title_count, duration_seconds=duration)


def assign_codes(catalog: CatalogStore, title_counts: pa.Table) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Catalog codes for every title trained on: ``(content ids, codes, event counts)``.

    Titles are registered most popular first (ties by id), so in a fresh catalog the most
    popular title gets code 0 and is the last resort of serving's fallback chain. Titles that
    already have a code keep it: users' histories are stored as codes.
    """
    order = pc.sort_indices(title_counts, sort_keys=[("events", "descending"), ("content_id", "ascending")])
    ranked = title_counts.take(order)
    title_ids = ranked.column("content_id").combine_chunks()
    codes = np.asarray(catalog.register(title_ids.to_pylist()), dtype=np.int64)
    counts = ranked.column("events").to_numpy().astype(np.float64)
    return title_ids, codes, counts


def build_model(
    title_ids: pa.Array,
    codes: np.ndarray,
    counts: np.ndarray,
    candidates: pa.Table,
    weights: PositionWeights,
    params: dict,
) -> NextTitleModel:
    """The model arrays, indexed by code. Titles with a code but no events here (registered
    elsewhere) get popularity 0 and no neighbours."""
    title_count = int(codes.max()) + 1
    popularity_scores = np.zeros(title_count, dtype=np.float32)
    popularity_scores[codes] = counts / counts.max()

    # Content ids -> codes without a Python loop: position in title_ids, then that title's code.
    source_codes = codes[pc.index_in(candidates.column("source_id"), value_set=title_ids).to_numpy()]
    target_codes = codes[pc.index_in(candidates.column("target_id"), value_set=title_ids).to_numpy()]
    ranks = candidates.column("rank").to_numpy()
    # Compressed rows: grouped by source code, strongest target first within each row.
    order = np.lexsort((ranks, source_codes))
    offsets = np.zeros(title_count + 1, dtype=np.int64)
    np.cumsum(np.bincount(source_codes, minlength=title_count), out=offsets[1:])
    return NextTitleModel(
        popularity_scores,
        offsets,
        target_codes[order],
        candidates.column("score").to_numpy()[order],
        weights=weights,
        params=params,
    )


def _no_events(sources: list[str], include_event_log: bool) -> NoTrainingEvents:
    looked_at = ", ".join(sources + ([event_sources.EVENT_LOG_SOURCE] if include_event_log else [])) or "nothing"
    return NoTrainingEvents(
        f"no watch events to train on (looked at: {looked_at}). Pass event files (Parquet, CSV with "
        "a header, or JSON Lines) with columns user_id, content_id, timestamp, or record watches "
        "through the API so that the event log has some; nothing was published."
    )
