"""Every Prometheus metric nextwatch exports, declared in one module.

Under ``nextwatch serve`` each worker is its own process; the server points
PROMETHEUS_MULTIPROC_DIR at a fresh folder before this module is imported, so prometheus_client
writes every worker's values to files that ``/metrics`` sums. A worker that dies leaves its
counter files (the sums must not go back); its per-process gauges are dropped at the next scrape.
"""

from __future__ import annotations

import os

import glob
import re

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

cache_hits = Counter("cache_hits", "GET /recommend answered from the cached prediction")
cache_misses = Counter("cache_misses", "GET /recommend that had to compute (or fall back)")
fallbacks_used = Counter("fallbacks_used", "Answers from the fallback chain", ["step"])
watch_events = Counter("watch_events", "Watch events recorded (duplicates of an event id excluded)")
prediction_hits = Counter("prediction_hits", "Watches of a title that the user's cached top-k had predicted")
duplicate_events = Counter("duplicate_events", "Watch events answered from a remembered event id")
recommendation_answers = Counter("recommendation_answers", "Answers of GET /recommend and POST /watched that name titles")
new_title_recommendations = Counter("new_title_recommendations",
                                    "Answers that recommend a title out for at most a day")
experiment_watches = Counter("experiment_watches", "Watches of users in an experiment, by arm",
                             ["experiment", "arm"])
experiment_prediction_hits = Counter("experiment_prediction_hits",
                                     "Watches of a title the user's cached top-k had predicted, by experiment arm",
                                     ["experiment", "arm"])
experiment_impressions = Counter("experiment_impressions", "Titles shown to users in an experiment, by arm",
                                 ["experiment", "arm"])
impressions_shown = Counter("impressions_shown", "Titles shown to users (POST /impressions), one per title")
impression_hits = Counter("impression_hits", "Watches of a title shown to the user within NEXTWATCH_IMPRESSION_WINDOW")
degraded_responses = Counter("degraded_responses", "Answers served without Redis, from the in-process model")
request_latency = Histogram(
    "http_request_duration_seconds",
    "Request latency by endpoint, method and status",
    ["endpoint", "method", "status"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

# Per worker process: the model version it serves (it learns a switch by pub/sub or its poll,
# service/serving_model.py). While a switch spreads, workers differ; after it, all agree.
serving_model_version = Gauge("serving_model_version", "Model version this worker process serves",
                              multiprocess_mode="liveall")


class ModelInfoCollector:
    """Facts about the serving model, read from Redis when Prometheus scrapes, so they are right
    whichever worker answers the scrape (a gauge per worker would report what that worker last
    loaded). ``read_model_info`` returns None when no model is published (or Redis is down),
    else a dict with version, trained_at, now, and optionally duration_seconds and ndcg_at_10."""

    GAUGES = {
        "version": ("model_version", "Version of the model serving now (0: none)"),
        "age": ("model_age_seconds", "Seconds since the serving model was trained"),
        "trained_at": ("model_trained_timestamp_seconds", "When the serving model was trained (unix seconds)"),
        "duration_seconds": ("model_training_duration_seconds", "How long training the serving model took"),
        "ndcg_at_10": ("model_offline_ndcg_at_10", "Offline NDCG@10 of the serving model, measured in training"),
        "time_capped": ("model_training_time_capped",
                        "1 if training the serving model hit NEXTWATCH_TRAIN_MINUTES before its holdout said stop"),
    }

    def __init__(self, read_model_info):
        self.read_model_info = read_model_info

    def collect(self):
        info = self.read_model_info() or {"version": 0}
        if "trained_at" in info:
            info["age"] = max(0.0, info["now"] - info["trained_at"])
        for field, (name, documentation) in self.GAUGES.items():
            if info.get(field) is not None:
                yield GaugeMetricFamily(name, documentation, value=float(info[field]))


def render(read_model_info) -> bytes:
    """The text exposition of every metric, summed over workers in multiprocess mode."""
    registry = _summed_over_workers()
    registry.register(ModelInfoCollector(read_model_info))
    return generate_latest(registry)


def serving_counts() -> dict:
    """The serving counters as /metrics exports them (summed over workers), for GET /stats."""
    totals = dict.fromkeys(("cache_hits", "cache_misses", "fallbacks_used", "watch_events", "prediction_hits"), 0)
    by_step: dict[str, int] = {}
    for family in _summed_over_workers().collect():
        if family.name not in totals:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):  # not the _created timestamps of one process
                totals[family.name] += int(sample.value)
                if "step" in sample.labels:
                    step = sample.labels["step"]
                    by_step[step] = by_step.get(step, 0) + int(sample.value)
    lookups = totals["cache_hits"] + totals["cache_misses"]
    return {**totals, "fallbacks_by_step": by_step,
            "hit_rate": totals["cache_hits"] / lookups if lookups else None}


def _summed_over_workers() -> CollectorRegistry:
    registry = CollectorRegistry()
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        forget_dead_workers(folder)
        multiprocess.MultiProcessCollector(registry)
    else:  # one process (tests, `flask run`): the process-wide registry holds the values
        registry.register(_ProcessMetrics())
    return registry


class _ProcessMetrics:
    def collect(self):
        yield from REGISTRY.collect()


_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def forget_dead_workers(folder: str) -> list[int]:
    """Drop the per-process gauges of worker processes that no longer run (a replaced worker):
    what gunicorn's child_exit hook did, done at scrape time so that no server hook is needed."""
    dead = set()
    for path in glob.glob(os.path.join(folder, "gauge_live*.db")):
        match = _LIVE_GAUGE_FILE.search(os.path.basename(path))
        if match and not _running(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, folder)
    return sorted(dead)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
