"""Experiments: A/B tests of models on live traffic.

An experiment splits users into arms by a stable hash of the user id and the experiment name
(the same user, the same arm, on every worker and replica, for as long as the experiment runs).
Each arm serves one target:

- a published model version (``12``): that model, whatever is current;
- ``current``: the current model (the control, usually);
- ``table``: the current model without its sequence network (the neighbour table alone);
- ``popular``: the most popular titles the user has not watched (a deliberately weak arm, to
  check that an experiment can tell).

One experiment runs at a time. Its users' watches, prediction hits (a watch of a title their
cached top-k held) and impressions are counted per arm, in Prometheus (labelled by experiment
and arm) and in Redis (``store/experiments.py``), which ``report`` reads: each arm's hit rate,
and against the first arm the difference with a two-proportion z-test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import threading
import time

from ..errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from ..store import Store

CONFIGURATIONS = ("current", "table", "popular")
REFRESH_SECONDS = 2.0  # how soon a worker serves an experiment started or stopped elsewhere
SIGNIFICANCE = 0.05
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_ARM = re.compile(r"[A-Za-z0-9_\-]{1,32}")


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    target: str  # a model version's number, or one of CONFIGURATIONS
    share: float  # percent

    @property
    def version(self) -> int | None:
        return int(self.target) if self.target.isdigit() else None


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    arms: tuple[Arm, ...]
    started_at: float
    stopped_at: float | None = None
    promoted: str | None = None

    @property
    def running(self) -> bool:
        return self.stopped_at is None

    def arm_for(self, user_id: str) -> Arm:
        """The user's arm: where the user's hash point falls among the arms' cumulative shares."""
        point = assignment_point(self.name, user_id) * 100.0
        edge = 0.0
        for arm in self.arms:
            edge += arm.share
            if point < edge:
                return arm
        return self.arms[-1]

    def to_json(self) -> dict:
        return {"arms": [dataclasses.asdict(arm) for arm in self.arms], "started_at": self.started_at,
                "stopped_at": self.stopped_at, "promoted": self.promoted}

    @classmethod
    def from_json(cls, name: str, value: dict) -> "Experiment":
        return cls(name, tuple(Arm(**arm) for arm in value["arms"]), value["started_at"], value.get("stopped_at"),
                   value.get("promoted"))


def assignment_point(experiment: str, user_id: str) -> float:
    """A number in [0, 1), the same for the same user and experiment everywhere (BLAKE2b, so
    users of one experiment are independent of another's split)."""
    digest = hashlib.blake2b(f"{experiment}\0{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def parse_arms(specs: list[str]) -> tuple[Arm, ...]:
    """``NAME=TARGET:SHARE`` each (``A=current:50``, ``B=12:50``); shares add up to 100."""
    arms = []
    for spec in specs:
        name, equals, rest = spec.partition("=")
        target, colon, share = rest.rpartition(":")
        if not equals or not colon or not _ARM.fullmatch(name):
            raise InvalidInput(f"an arm is NAME=TARGET:SHARE with NAME of 1-32 characters from [A-Za-z0-9_-], "
                               f"got {spec!r}", error="invalid_arm")
        if not (target.isdigit() and int(target) > 0) and target not in CONFIGURATIONS:
            raise InvalidInput(f"arm {name}: the target is a model version or one of {', '.join(CONFIGURATIONS)}, "
                               f"got {target!r}", error="invalid_arm")
        try:
            percent = float(share)
        except ValueError:
            percent = -1.0
        if not 0 < percent <= 100:
            raise InvalidInput(f"arm {name}: the share is a percentage above 0, got {share!r}", error="invalid_arm")
        arms.append(Arm(name, str(int(target)) if target.isdigit() else target, percent))
    if len(arms) < 2 or len({arm.name for arm in arms}) != len(arms):
        raise InvalidInput("an experiment needs at least two arms with different names", error="invalid_arm")
    if abs(sum(arm.share for arm in arms) - 100.0) > 1e-6:
        raise InvalidInput(f"the arms' shares add up to {sum(arm.share for arm in arms):g}, not 100",
                           error="invalid_arm")
    return tuple(arms)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput("experiment names are 1-64 characters from [A-Za-z0-9_.-]", error="invalid_experiment")
    return name


class Experiments:
    """The experiments as this process knows them (re-read at most every REFRESH_SECONDS)."""

    def __init__(self, store: Store, refresh_seconds: float = REFRESH_SECONDS, clock=time.monotonic):
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self._running: Experiment | None = None
        self._read_at = -math.inf
        self._lock = threading.Lock()

    def running(self) -> Experiment | None:
        if self.clock() - self._read_at >= self.refresh_seconds:
            self._refresh()
        return self._running

    def _refresh(self) -> None:
        if not self._lock.acquire(blocking=False):
            return  # another thread reads; this request goes on with what is known
        try:
            try:
                found = [Experiment.from_json(n, v) for n, v in self.store.experiments.all().items()]
                self._running = next((e for e in found if e.running), None)
            except StoreUnavailable:
                pass  # keep what is known; serving goes on
            self._read_at = self.clock()
        finally:
            self._lock.release()

    # -- operations (the CLI) ------------------------------------------------------------------
    def start(self, name: str, arm_specs: list[str]) -> Experiment:
        experiment = Experiment(validate_name(name), parse_arms(arm_specs), time.time())
        published = set(self.store.models.versions())
        for arm in experiment.arms:
            if arm.version is not None and arm.version not in published:
                raise NotFound(f"arm {arm.name}: model version {arm.version} is not published",
                               error="unknown_model_version")
        self.store.experiments.start(name, experiment.to_json())
        self._read_at = -math.inf
        return experiment

    def all(self) -> list[Experiment]:
        return sorted((Experiment.from_json(n, v) for n, v in self.store.experiments.all().items()),
                      key=lambda e: e.started_at)

    def get(self, name: str) -> Experiment:
        found = self.store.experiments.all().get(name)
        if found is None:
            raise NotFound(f"no experiment named {name!r}", error="unknown_experiment")
        return Experiment.from_json(name, found)

    def stop(self, name: str, promote: str | None = None) -> Experiment:
        experiment = self.get(name)
        if not experiment.running:
            raise Conflict(f"experiment {name!r} was stopped already", error="experiment_stopped")
        if promote is not None:
            arm = next((a for a in experiment.arms if a.name == promote), None)
            if arm is None:
                raise NotFound(f"experiment {name!r} has no arm {promote!r}", error="unknown_arm")
            if arm.version is not None:
                self.store.models.activate(arm.version)
            elif arm.target != "current":
                raise InvalidInput(f"arm {promote!r} serves the configuration {arm.target!r}, not a model version: "
                                   "there is nothing to promote", error="not_promotable")
        stopped = dataclasses.replace(experiment, stopped_at=time.time(), promoted=promote)
        self.store.experiments.update(name, stopped.to_json())
        self._read_at = -math.inf
        return stopped

    def report(self, name: str) -> dict:
        experiment = self.get(name)
        counts = self.store.experiments.counts(name)
        arms = []
        for arm in experiment.arms:
            arm_counts = counts.get(arm.name, {"watches": 0, "hits": 0, "impressions": 0})
            watches, hits = arm_counts["watches"], arm_counts["hits"]
            arms.append({"arm": arm.name, "target": arm.target, "share": arm.share, **arm_counts,
                         "hit_rate": hits / watches if watches else None,
                         "hit_rate_ci95": wilson_interval(hits, watches)})
        control = arms[0]
        for arm in arms[1:]:
            arm["against_" + control["arm"]] = two_proportion_test(arm["hits"], arm["watches"], control["hits"],
                                                                   control["watches"])
        return {"experiment": name, "running": experiment.running, "started_at": experiment.started_at,
                "stopped_at": experiment.stopped_at, "promoted": experiment.promoted, "arms": arms}


def wilson_interval(hits: int, trials: int, z: float = 1.959964) -> tuple[float, float] | None:
    """The 95% Wilson score interval of a proportion (None without trials)."""
    if trials == 0:
        return None
    p = hits / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return (max(0.0, centre - half), min(1.0, centre + half))


def two_proportion_test(hits: int, trials: int, control_hits: int, control_trials: int) -> dict:
    """The difference of two hit rates with a pooled two-proportion z-test (two-sided)."""
    if trials == 0 or control_trials == 0:
        return {"difference": None, "z": None, "p_value": None, "significant": False}
    p, q = hits / trials, control_hits / control_trials
    pooled = (hits + control_hits) / (trials + control_trials)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / trials + 1 / control_trials))
    if spread == 0:
        return {"difference": p - q, "z": None, "p_value": None, "significant": False}
    z = (p - q) / spread
    p_value = math.erfc(abs(z) / math.sqrt(2))
    return {"difference": p - q, "z": z, "p_value": p_value, "significant": p_value < SIGNIFICANCE}
