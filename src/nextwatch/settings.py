"""The one place that reads NEXTWATCH_* environment variables.

Every setting has a documented default, is parsed and range-checked once at start-up, and a bad
value stops start-up with a message naming the variable. Command-line flags override the
environment by passing ``overrides`` (keyed by field name) to :func:`load_settings`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Mapping

ENV_PREFIX = "NEXTWATCH_"


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def _number(kind: type, low, high, unit: str = "") -> Callable[[str], Any]:
    """A parser for an int or float setting within [low, high]."""
    described = "a whole number" if kind is int else "a number"

    def parse(raw: str):
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"must be {described}{' of' + unit if unit else ''}, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}{unit}, got {value}")
        return value

    return parse


def _integer(low: int, high: int) -> Callable[[str], int]:
    return _number(int, low, high)


def _seconds(low: float, high: float) -> Callable[[str], float]:
    return _number(float, low, high, unit=" seconds")


CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def _redis_url(raw: str) -> str:
    """One Redis (redis://, rediss://, unix://) or a Redis Cluster given by start-up nodes:
    ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://`` for TLS; a password
    as ``redis+cluster://:password@host:port,...``)."""
    if raw.startswith(CLUSTER_SCHEMES):
        cluster_nodes(raw)  # raises ValueError naming what is wrong
        return raw
    if not re.match(r"^(redis|rediss|unix)://", raw):
        raise ValueError("must start with redis://, rediss://, unix:// or, for a Redis Cluster, "
                         f"redis+cluster://host:port[,host:port...]; got {raw!r}")
    return raw


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], str | None, bool]:
    """The start-up nodes of a ``redis+cluster://`` URL, its password (or None) and whether it
    uses TLS. ValueError names the part that cannot be used."""
    scheme, _, rest = url.partition("://")
    password = None
    if "@" in rest:
        credentials, _, rest = rest.rpartition("@")
        password = credentials.partition(":")[2] or None
    rest = rest.split("/", 1)[0].split("?", 1)[0]
    nodes = []
    for part in rest.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"must list the cluster's start-up nodes as host:port[,host:port...], "
                             f"got {part.strip() or 'nothing'!r} in {url!r}")
        nodes.append((host.strip("[]"), int(port)))
    return nodes, password, scheme.startswith("rediss")


def _key_prefix(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", raw):
        raise ValueError("must be 1-32 characters from [A-Za-z0-9_.-]")
    return raw


def _http_url(raw: str) -> str:
    if not re.match(r"^https?://[^/\s]+", raw):
        raise ValueError(f"must be an http:// or https:// URL, got {raw!r}")
    return raw.rstrip("/")


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {raw!r}")
        return raw

    return parse


def _flag(raw: str) -> bool:
    # str(True) and str(False) too: Settings.environment() hands flags to worker processes so.
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be 1 or 0 (true/false, yes/no, on/off), got {raw!r}")


def _text(raw: str) -> str:
    if not raw:
        raise ValueError("must not be empty")
    return raw


# NEXTWATCH_SEQUENCE_LOSS's values; training/losses.py says what each one trains with.
SEQUENCE_LOSSES = ("auto", "full", "sampled")
# NEXTWATCH_SEQUENCE_ENGINE's and _DEVICE's values; training/engines.py says what each one does.
SEQUENCE_ENGINES = ("auto", "local", "distributor")
SEQUENCE_DEVICES = ("auto", "cpu")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Typed, validated settings. Build with :func:`load_settings`, or directly in tests."""

    redis_url: str = "redis://127.0.0.1:6380/0"
    key_prefix: str = "nw"
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 4
    threads: int = 4  # Python threads per worker process running the WSGI app
    history_length: int = 50
    cache_top_k: int = 10
    event_id_ttl_seconds: int = 86_400
    event_log_max_length: int = 1_000_000
    models_kept: int = 3
    redis_timeout_seconds: float = 1.0
    spark_master: str = "local[2]"
    data_dir: str = ".nextwatch"
    archive_dir: str = ".nextwatch/archive"
    api_keys_refresh_seconds: float = 5.0
    rate_limit: float = 0.0  # requests per second per API key; 0: no limit
    rate_limit_burst: float | None = None  # None: twice the rate
    api_url: str = "http://127.0.0.1:5000"  # where clients (the notebook) reach a running API
    sequence_model: str = "auto"  # train the sequence model: auto (when PyTorch is installed) or off
    sequence_loss: str = "auto"  # the sequence model's loss: full softmax, sampled, or auto (by the titles)
    sequence_negatives: int = 3000  # titles each target is contrasted with when the loss is sampled
    sequence_engine: str = "auto"  # where the network trains: auto, local or distributor (training/engines.py)
    sequence_processes: int = 0  # TorchDistributor's processes; 0: one per executor slot (local[N]: N)
    sequence_device: str = "auto"  # auto: a GPU when PyTorch sees one; cpu: never
    train_minutes: float = 14.0  # safety cap of one training run (the holdout chooses the network's epochs)
    shards: int = 64  # user shards, each with its own event-log stream (and hash slot in a cluster)
    write_replicas: int = 0  # replicas that must hold a watch before POST /watched answers 2xx
    write_replicas_timeout_seconds: float = 0.5  # how long POST /watched waits for them
    impression_cap: int = 3  # shows of a title without a watch before it is demoted for the user
    impression_demotion_seconds: int = 7 * 86_400  # how long such a title stays demoted
    impression_window_seconds: int = 86_400  # a watch within this long of a show is a hit of the impression
    model_refresh_seconds: float = 1.0  # back-up poll of the current model version (pub/sub is first)
    allow_open: bool = False  # serve beyond loopback with no API key configured (writes open to all)

    def __post_init__(self):
        if self.write_replicas and self.write_replicas_timeout_seconds >= self.redis_timeout_seconds:
            # WAIT holds the reply that long: a socket timeout that fires first turns "the
            # replicas are late" into "Redis is unreachable".
            raise SettingsError(f"{ENV_PREFIX}WRITE_REPLICAS_TIMEOUT ({self.write_replicas_timeout_seconds:g} s) must "
                                f"be shorter than {ENV_PREFIX}REDIS_TIMEOUT ({self.redis_timeout_seconds:g} s)")

    @property
    def rate_limit_capacity(self) -> float:
        """Tokens a key's bucket holds: the burst, by default twice the rate (at least one)."""
        if self.rate_limit_burst is not None:
            return self.rate_limit_burst
        return max(1.0, 2 * self.rate_limit)

    def environment(self) -> dict[str, str]:
        """These settings as NEXTWATCH_* variables, which ``load_settings`` reads back to equal
        settings: how `nextwatch serve` hands its flags to the worker processes."""
        variables = {}
        for field, (suffix, _parse, _meaning) in SETTINGS_SPEC.items():
            value = getattr(self, field)
            if value is not None:
                variables[ENV_PREFIX + suffix] = repr(value) if isinstance(value, float) else str(value)
        return variables

    def with_overrides(self, **overrides: Any) -> "Settings":
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


# name -> (environment variable, parser, what it means). The README's settings table mirrors this.
SETTINGS_SPEC: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "redis_url": ("REDIS_URL", _redis_url, "Redis holding histories, caches, models, event log"),
    "key_prefix": ("KEY_PREFIX", _key_prefix, "prefix of every Redis key nextwatch writes"),
    "host": ("HOST", _text, "address the API listens on"),
    "port": ("PORT", _integer(1, 65535), "port the API listens on"),
    "workers": ("WORKERS", _integer(1, 64), "API worker processes"),
    "threads": ("THREADS", _integer(1, 256), "Python threads per API worker process (a Redis wait of one request "
                                            "overlaps another's work)"),
    "history_length": ("HISTORY_LENGTH", _integer(1, 1000), "titles kept per user history"),
    "cache_top_k": ("CACHE_TOP_K", _integer(1, 100), "titles kept in a user's cached list"),
    "event_id_ttl_seconds": ("EVENT_ID_TTL", _integer(1, 30 * 86_400), "how long event ids are remembered"),
    "event_log_max_length": ("EVENT_LOG_MAX_LENGTH", _integer(1_000, 10**9), "cap of the event stream"),
    "models_kept": ("MODELS_KEPT", _integer(1, 100), "published model versions kept"),
    "redis_timeout_seconds": ("REDIS_TIMEOUT", _seconds(0.01, 60), "Redis connect/read timeout"),
    "spark_master": ("SPARK_MASTER", _text, "Spark master URL for training"),
    "data_dir": ("DATA_DIR", _text, "folder for the demo's Redis data, catalog and event files"),
    "archive_dir": ("ARCHIVE_DIR", _text, "folder of the event archive (Parquet, one folder per day)"),
    "api_keys_refresh_seconds": ("API_KEYS_REFRESH", _seconds(0.05, 3600),
                                 "how often serving processes re-read the API keys from Redis"),
    "rate_limit": ("RATE_LIMIT", _number(float, 0, 1_000_000, unit=" requests per second"),
                   "requests per second per API key (0: no limit)"),
    "rate_limit_burst": ("RATE_LIMIT_BURST", _number(float, 1, 10_000_000, unit=" requests"),
                         "requests an API key may make at once (default twice the rate)"),
    "api_url": ("API_URL", _http_url, "base URL of a running API, for clients such as notebooks/explore.ipynb"),
    "sequence_model": ("SEQUENCE_MODEL", _choice("auto", "off"),
                       "train the sequence model beside the table: auto (when PyTorch is installed) or off"),
    "sequence_loss": ("SEQUENCE_LOSS", _choice(*SEQUENCE_LOSSES),
                      "the sequence model's loss: full (softmax over every title), sampled (the target against "
                      "NEXTWATCH_SEQUENCE_NEGATIVES sampled titles) or auto (full below a measured number of titles, "
                      "sampled from there on)"),
    "sequence_negatives": ("SEQUENCE_NEGATIVES", _integer(1, 1_000_000),
                           "titles each batch's targets are contrasted with when the sequence loss is sampled"),
    "sequence_engine": ("SEQUENCE_ENGINE", _choice(*SEQUENCE_ENGINES),
                        "where the sequence network trains: auto (TorchDistributor on a Spark cluster, this process "
                        "in local mode), local (this process) or distributor (TorchDistributor, also in local mode)"),
    "sequence_processes": ("SEQUENCE_PROCESSES", _integer(0, 4096),
                           "TorchDistributor's processes for the sequence network; 0: one per executor slot "
                           "(local[N]: N)"),
    "sequence_device": ("SEQUENCE_DEVICE", _choice(*SEQUENCE_DEVICES),
                        "the sequence network's device: auto (a GPU when PyTorch sees one) or cpu"),
    "train_minutes": ("TRAIN_MINUTES", _number(float, 0.1, 24 * 60, unit=" minutes"),
                      "safety cap of one training run: the holdout chooses the sequence model's epochs; "
                      "the cap stops it only if reached first (time_capped in the model's metadata)"),
    "shards": ("SHARDS", _integer(1, 1024),
               "user shards, each with its own event-log stream and hash slot; fixed once data is written"),
    "write_replicas": ("WRITE_REPLICAS", _integer(0, 16),
                       "replicas that must hold a watch (Redis WAIT) before POST /watched answers 2xx"),
    "write_replicas_timeout_seconds": ("WRITE_REPLICAS_TIMEOUT", _seconds(0.001, 60),
                                       "how long POST /watched waits for NEXTWATCH_WRITE_REPLICAS replicas"),
    "impression_cap": ("IMPRESSION_CAP", _integer(1, 1000),
                       "times a title may be shown to a user without a watch before it is demoted for them"),
    "impression_demotion_seconds": ("IMPRESSION_DEMOTION", _integer(1, 365 * 86_400),
                                    "seconds a title shown too often stays demoted for that user"),
    "impression_window_seconds": ("IMPRESSION_WINDOW", _integer(1, 30 * 86_400),
                                  "a watch this many seconds after a show counts as a hit of the impression"),
    "model_refresh_seconds": ("MODEL_REFRESH", _seconds(0, 3600),
                              "how often serving processes poll the current model version (pub/sub tells them "
                              "at once; this is the back-up); 0: read it on every request"),
    "allow_open": ("ALLOW_OPEN", _flag,
                   "let `nextwatch serve` listen beyond loopback while no API key is configured (writes open to "
                   "anyone who reaches the port)"),
}


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read NEXTWATCH_* variables, validate them, then apply non-None ``overrides`` (flags)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field, (suffix, parse, _meaning) in SETTINGS_SPEC.items():
        variable = ENV_PREFIX + suffix
        raw = environ.get(variable)
        if raw is None or raw == "":
            continue
        try:
            values[field] = parse(raw.strip())
        except ValueError as problem:
            raise SettingsError(f"{variable} {problem}") from None
    for field, value in overrides.items():
        if value is None:
            continue
        suffix, parse, _meaning = SETTINGS_SPEC[field]
        try:
            values[field] = parse(str(value))
        except ValueError as problem:
            raise SettingsError(f"--{field.replace('_', '-')} ({ENV_PREFIX}{suffix}) {problem}") from None
    return Settings(**values)
