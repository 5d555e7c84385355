"""Connecting to Redis, and turning its connection failures into StoreUnavailable and its
out-of-memory refusals into StoreOutOfMemory."""

from __future__ import annotations

import functools

import redis

from ..errors import StoreOutOfMemory, StoreUnavailable
from ..settings import Settings

# Errors that mean "Redis is not there right now", as opposed to a bug in a command.
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, ConnectionResetError)


def connect(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=30,
        # A dropped connection is retried once on a fresh socket before the caller hears of it.
        retry_on_timeout=False,
    )


def is_out_of_memory(failure: redis.ResponseError) -> bool:
    """Redis answered ``-OOM command not allowed when used memory > 'maxmemory'``.

    redis-py (5 to 8) raises OutOfMemoryError for it and strips the ``OOM `` code from the
    message; inside a script or a pipeline the message gains a prefix or suffix but keeps its
    class. The text check covers clients that leave the reply as a plain ResponseError."""
    return isinstance(failure, redis.exceptions.OutOfMemoryError) or str(failure).startswith("OOM")


def translate_failures(method):
    """Decorator for store methods: a Redis that cannot be reached raises StoreUnavailable, a
    write refused at ``maxmemory`` raises StoreOutOfMemory (both 503 with Retry-After)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except UNREACHABLE as failure:
            raise StoreUnavailable(f"Redis is unreachable: {failure.__class__.__name__}") from failure
        except redis.ResponseError as failure:
            if is_out_of_memory(failure):
                # The message can name a pipeline's commands and their values: not repeated here.
                raise StoreOutOfMemory("Redis is out of memory (maxmemory reached, nothing left to evict); "
                                       "writes are refused until memory is freed") from failure
            raise

    return wrapper
