"""The training job: watch events in, a published next-title model out.

Events come from files (an archive, an import) and from the live event log in Redis. Spark
counts title popularity, titles are given their catalog codes, ``fit.py`` builds the model
(only its top-n tables are collected), and the model is published through ``store.models``,
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

from ..model import PositionWeights
from ..settings import Settings
from ..store import Store
from ..store.catalog import CatalogStore
from . import sources as event_sources
from .fit import FitParams, TitleCodes, fit_next_title
from .sequence_training import options_from as sequence_options
from .transitions import popularity

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
    sequence_weight: float = 0.0  # λ of the sequence model in the published model (0: the table alone)
    sequence_epochs: int = 0  # epochs its network trained on all the events


def train(
    settings: Settings,
    store: Store,
    spark: SparkSession,
    sources: list[str] | None = None,
    include_event_log: bool = True,
    top_n: int = 100,
    weights: PositionWeights | None = None,
    model: str = "neighbours",
    params: FitParams | None = None,
) -> TrainingResult:
    """Train on ``sources`` (Parquet files or folders, ``.csv`` with a header, ``.jsonl``/
    ``.json`` JSON Lines; columns user_id, content_id, timestamp) plus, if
    ``include_event_log``, every event in the Redis event log; publish the model and make it
    current. Keeps ``top_n`` next titles per title. Raises NoTrainingEvents, publishing
    nothing, when there are no events.

    ``model`` picks the variant (``fit.MODELS``); ``weights`` None takes the variant's default
    (the last 10 titles for ``neighbours``, 5 for ``transitions``), weighted 0.6^i. ``params``
    None tunes the ``neighbours`` parameters on a holdout of each user's last event; the
    chosen ones and the holdout figures go into the model's params and metadata.

    ``settings`` says whether the sequence model is trained beside the table, and the run's
    safety cap (``train_minutes``): the metadata records ``time_capped`` and the network's
    ``sequence_stopped_by``.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    if weights is None:
        weights = PositionWeights(window=10 if model == "neighbours" else 5, decay=0.6)
    base = FitParams(model=model, top_n=top_n, window=weights.window, decay=weights.decay)
    if params is not None:
        params = dataclasses.replace(params, model=model, top_n=top_n, window=weights.window, decay=weights.decay)
    started = time.monotonic()
    sources = list(sources or [])
    # The scratch folder holds the event log's snapshot until every Spark job has read it.
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
        # Not cached: a second scan of Parquet costs less than the cache, which ran a 1 GiB
        # driver out of memory on a full (1M event) log.
        events = event_sources.union_events(frames)
        title_counts = popularity(events).toArrow()
        if title_counts.num_rows == 0:
            raise _no_events(sources, include_event_log)
        title_ids, codes, counts = assign_codes(store.catalog, title_counts)
        sequence = sequence_options(settings) if model == "neighbours" else None
        # NEXTWATCH_TRAIN_MINUTES is a safety cap: the holdout chooses the network's epochs.
        fitted, report = fit_next_title(spark, events, TitleCodes(title_ids, codes), params=params,
                                        order_column="seq", base=base, sequence=sequence,
                                        deadline=started + settings.train_minutes * 60)

    fitted.trained_at = time.time()
    duration = time.monotonic() - started
    n_events = int(counts.sum())
    extra_meta = {
        "events": str(n_events),
        "sources": json.dumps(used_sources),
        "duration_seconds": f"{duration:.3f}",
        "model": model,
    }
    if report.holdout is not None:
        extra_meta.update({"ndcg@10": repr(report.holdout["ndcg@10"]), "hr@10": repr(report.holdout["hr@10"]),
                           "holdout_users": str(report.holdout["users"]), "grid": json.dumps(report.grid)})
    if report.sequence is not None:
        extra_meta["sequence_tuning"] = json.dumps(report.sequence)
        if "engine" in report.sequence:  # where the network trained (training/engines.py)
            extra_meta["sequence_engine"] = report.sequence["engine"]
    # "1" when NEXTWATCH_TRAIN_MINUTES ended a training of the network before the holdout (or the
    # epochs asked for) did: the model_training_time_capped gauge reads it (service/admin.py).
    extra_meta["time_capped"] = "1" if report.time_capped else "0"
    if report.sequence_stopped_by is not None:
        extra_meta["sequence_stopped_by"] = report.sequence_stopped_by
    version = store.models.publish(fitted, extra_meta=extra_meta)
    log.info("published model %d: %d events, %d titles, %.1f s, params %s, holdout %s", version, n_events,
             fitted.title_count, duration, fitted.params, report.holdout)
    return TrainingResult(version=version, events=n_events, titles=fitted.title_count, duration_seconds=duration,
                          sequence_weight=fitted.sequence_weight,
                          sequence_epochs=int(fitted.params.get("sequence_epochs", 0)) if fitted.has_sequence else 0)


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


def _no_events(sources: list[str], include_event_log: bool) -> NoTrainingEvents:
    looked_at = ", ".join(sources + ([event_sources.EVENT_LOG_SOURCE] if include_event_log else [])) or "nothing"
    return NoTrainingEvents(
        f"no watch events to train on (looked at: {looked_at}). Pass event files (Parquet, CSV with "
        "a header, or JSON Lines) with columns user_id, content_id, timestamp, or record watches "
        "through the API so that the event log has some; nothing was published."
    )
