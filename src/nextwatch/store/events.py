"""The event log read back whole, for training: every shard's stream, oldest first per shard.

A user's events all sit in one shard's stream (keys.py), so reading shard after shard keeps
each user's order; training orders by timestamp anyway. Stream ids are unique only within a
shard, so every event carries its shard beside its stream id.
"""

from __future__ import annotations

from typing import Iterator

from ..keys import Keys
from .connection import translate_failures
from .stream_entries import decode_event


class EventLog:
    def __init__(self, client, keys: Keys):
        self.client = client
        self.keys = keys

    @translate_failures
    def length(self) -> int:
        """Entries in every shard's stream (one pipeline: one round trip per node)."""
        pipe = self.client.pipeline(transaction=False)
        for stream in self.keys.event_logs():
            pipe.xlen(stream)
        return int(sum(pipe.execute()))

    @translate_failures
    def read_all(self, batch: int = 10_000) -> Iterator[dict]:
        """Every event in every shard's stream, shard by shard, oldest first within a shard, as
        dicts with user_id, content_id, timestamp (float seconds), event_id, stream_id and shard.
        Entries that cannot be read as events are skipped. A failure while the caller iterates
        raises StoreUnavailable too (translate_failures wraps generators)."""
        for shard, stream in enumerate(self.keys.event_logs()):
            start = "-"
            while True:
                entries = self.client.xrange(stream, min=start, max="+", count=batch)
                for raw_id, fields in entries:
                    event = decode_event(shard, raw_id.decode(), fields)
                    if event is not None:
                        yield event
                if len(entries) < batch:
                    break
                start = "(" + entries[-1][0].decode()
