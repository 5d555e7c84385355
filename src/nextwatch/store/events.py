"""The event log: a capped Redis Stream of accepted watch events, read back for training."""

from __future__ import annotations

from typing import Iterator

import redis

from ..keys import Keys
from .connection import translate_failures


class EventLog:
    def __init__(self, client: redis.Redis, keys: Keys):
        self.client = client
        self.keys = keys

    @translate_failures
    def length(self) -> int:
        return int(self.client.xlen(self.keys.event_log))

    @translate_failures
    def read_all(self, batch: int = 10_000) -> Iterator[dict]:
        """Every event in the stream, oldest first, as dicts with user_id, content_id,
        timestamp (float seconds) and the stream id."""
        start = "-"
        while True:
            entries = self.client.xrange(self.keys.event_log, min=start, max="+", count=batch)
            for stream_id, fields in entries:
                yield {
                    "user_id": fields[b"user_id"].decode(),
                    "content_id": fields[b"content_id"].decode(),
                    "timestamp": float(fields[b"ts"]),
                    "event_id": fields.get(b"event_id", b"").decode() or None,
                    "stream_id": stream_id.decode(),
                }
            if len(entries) < batch:
                return
            start = "(" + entries[-1][0].decode()
