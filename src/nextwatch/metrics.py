"""Every Prometheus metric nextwatch exports, declared in one module.

Under gunicorn each worker is its own process; ``nextwatch serve`` points
PROMETHEUS_MULTIPROC_DIR at a fresh folder before this module is imported, so prometheus_client
writes every worker's values to files that ``/metrics`` sums.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

cache_hits = Counter("cache_hits", "GET /recommend answered from the cached prediction")
cache_misses = Counter("cache_misses", "GET /recommend that had to compute (or fall back)")
fallbacks_used = Counter("fallbacks_used", "Answers from the fallback chain", ["step"])
watch_events = Counter("watch_events", "Watch events recorded (duplicates of an event id excluded)")
prediction_hits = Counter("prediction_hits", "Watches of a title that the user's cached top-k had predicted")
duplicate_events = Counter("duplicate_events", "Watch events answered from a remembered event id")
degraded_responses = Counter("degraded_responses", "Answers served without Redis, from the in-process model")
request_latency = Histogram(
    "http_request_duration_seconds",
    "Request latency by endpoint, method and status",
    ["endpoint", "method", "status"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


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
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:  # one process (tests, `flask run`): the process-wide registry holds the values
        registry.register(_ProcessMetrics())
    return registry


class _ProcessMetrics:
    def collect(self):
        yield from REGISTRY.collect()
