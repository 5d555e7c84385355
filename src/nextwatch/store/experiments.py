"""Experiments (A/B tests of models) in Redis: their definitions, and per arm what their users
did (watches, prediction hits, impressions), counted in each user's shard.

Definitions are one hash (``keys.experiments``), name -> JSON. Counts are one hash per
experiment and shard (``keys.experiment_counts``), in the shard's slot, so the round trip that
caches a watch's prediction counts it too; a report sums the shards in one pipeline.
"""

from __future__ import annotations

import json

from ..errors import Conflict, NotFound
from ..keys import Keys
from .connection import translate_failures

COUNTS = ("watches", "hits", "impressions")


class ExperimentStore:
    def __init__(self, client, keys: Keys):
        self.client = client
        self.keys = keys

    @translate_failures
    def all(self) -> dict[str, dict]:
        """Every experiment, running or stopped, by name."""
        return {name.decode(): json.loads(value) for name, value in self.client.hgetall(self.keys.experiments).items()}

    @translate_failures
    def start(self, name: str, definition: dict) -> None:
        """Store a new experiment; Conflict when the name is taken or another one runs. WATCHed,
        so two starts racing cannot both win."""

        def add_if_alone(pipe) -> None:
            existing = {n.decode(): json.loads(v) for n, v in pipe.hgetall(self.keys.experiments).items()}
            if name in existing:
                raise Conflict(f"an experiment named {name!r} exists (stopped ones keep their name)",
                               error="experiment_exists")
            running = [n for n, e in existing.items() if not e.get("stopped_at")]
            if running:
                raise Conflict(f"experiment {running[0]!r} is running; stop it first", error="experiment_running")
            pipe.multi()
            pipe.hset(self.keys.experiments, name, json.dumps(definition))

        self.client.transaction(add_if_alone, self.keys.experiments)

    @translate_failures
    def update(self, name: str, definition: dict) -> None:
        if not self.client.hexists(self.keys.experiments, name):
            raise NotFound(f"no experiment named {name!r}", error="unknown_experiment")
        self.client.hset(self.keys.experiments, name, json.dumps(definition))

    @translate_failures
    def counts(self, name: str) -> dict[str, dict[str, int]]:
        """arm -> {watches, hits, impressions}, summed over the shards (one round trip per node)."""
        pipe = self.client.pipeline(transaction=False)
        for shard in range(self.keys.shards):
            pipe.hgetall(self.keys.experiment_counts(shard, name))
        totals: dict[str, dict[str, int]] = {}
        for fields in pipe.execute():
            for field, value in fields.items():
                arm, _, count = field.decode().rpartition(":")
                if count in COUNTS:
                    arm_totals = totals.setdefault(arm, dict.fromkeys(COUNTS, 0))
                    arm_totals[count] += int(value)
        return totals

    def count_commands(self, user_id: str, name: str, arm: str, **amounts: int) -> list[tuple]:
        """HINCRBY commands that add ``amounts`` (watches=1, hits=1 ...) to an arm's counts in the
        user's shard, for the caller to send in its own round trip to the user's node."""
        key = self.keys.experiment_counts(self.keys.shard_of(user_id), name)
        return [("HINCRBY", key, f"{arm}:{count}", amount) for count, amount in amounts.items() if amount]
