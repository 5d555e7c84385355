"""An event-log entry as the rest of nextwatch sees it: the one ordering of stream ids and the
one decoder of the fields that store/watch.lua writes."""

from __future__ import annotations

import math


def stream_id_order(stream_id: str) -> tuple[int, int]:
    """A sort key for stream ids ("<ms>-<seq>"): compared as numbers, not as text. Ids are only
    comparable within one shard's stream."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def decode_event(shard: int, stream_id: str, fields: dict | None) -> dict | None:
    """The entry's fields as a dict (user_id, content_id, timestamp in float seconds, event_id
    or None, kind: "watch" or "impression", stream_id, shard), or None when the entry is gone or
    unusable."""
    if not fields:
        return None
    try:
        timestamp = float(fields[b"ts"])
        event = {
            "user_id": fields[b"user_id"].decode(),
            "content_id": fields[b"content_id"].decode(),
            "timestamp": timestamp,
            "event_id": fields.get(b"event_id", b"").decode() or None,
            "kind": fields.get(b"kind", b"watch").decode(),
            "stream_id": stream_id,
            "shard": shard,
        }
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    return event if math.isfinite(timestamp) and timestamp >= 0 else None
