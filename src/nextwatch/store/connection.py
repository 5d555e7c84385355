"""Connecting to Redis, and turning its connection failures into StoreUnavailable."""

from __future__ import annotations

import functools

import redis

from ..errors import StoreUnavailable
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


def translate_failures(method):
    """Decorator for store methods: a Redis that cannot be reached raises StoreUnavailable."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except UNREACHABLE as failure:
            raise StoreUnavailable(f"Redis is unreachable: {failure.__class__.__name__}") from failure

    return wrapper
