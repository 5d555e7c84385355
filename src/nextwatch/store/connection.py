"""Connecting to one Redis or to a Redis Cluster, and turning Redis failures into the project's
own errors: StoreUnavailable when Redis (or the master of a slot) cannot be reached,
StoreOutOfMemory when a write is refused at ``maxmemory``.

A cluster is named by its start-up nodes (``redis+cluster://host:port,...``, settings.py); the
client is redis-py's ``RedisCluster``, which learns the slot map from them and follows MOVED
and ASK redirects. Connecting checks that every one of the 16384 slots has a master, so that a
half-built cluster stops start-up with a message rather than failing one request in three.
"""

from __future__ import annotations

import functools
import inspect

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from ..errors import StoreOutOfMemory, StoreUnavailable
from ..settings import Settings, SettingsError, cluster_nodes, is_cluster_url

# Errors that mean "Redis, or the master of a slot, is not there right now", as opposed to a
# bug in a command. The cluster ones come while a master is down and its replica not yet
# promoted (CLUSTERDOWN, TRYAGAIN, a slot without a master), or while slots move.
UNREACHABLE = (
    redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, ConnectionResetError,
    redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError, redis.exceptions.SlotNotCoveredError,
    redis.exceptions.ClusterError, redis.exceptions.ReadOnlyError,
)
# Every error a Redis client raises; those that are not UNREACHABLE or OOM are bugs.
REDIS_ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException, ConnectionResetError)
SLOTS = 16384

# How a cluster client retries a command whose node failed: a few quick tries (a failover takes
# a second or two, a moved slot one refresh of the slot map), then the caller hears of it, so a
# request is answered 503 within about a second rather than waiting out a whole failover.
CLUSTER_RETRIES = 3


def connect(settings: Settings) -> redis.Redis | RedisCluster:
    """A client for ``settings.redis_url``: one Redis, or a Redis Cluster (checked for full slot
    coverage; SettingsError names what is wrong)."""
    timeouts = {"socket_timeout": settings.redis_timeout_seconds,
                "socket_connect_timeout": settings.redis_timeout_seconds}
    if not is_cluster_url(settings.redis_url):
        return redis.Redis.from_url(settings.redis_url, health_check_interval=30,
                                    # A dropped connection is retried once on a fresh socket.
                                    retry_on_timeout=False, **timeouts)
    return connect_cluster(settings.redis_url, **timeouts)


def connect_cluster(url: str, **options) -> RedisCluster:
    nodes, password, tls = cluster_nodes(url)
    try:
        client = RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in nodes], password=password,
                              ssl=tls, require_full_coverage=True,
                              retry=Retry(ExponentialBackoff(cap=0.25, base=0.02), CLUSTER_RETRIES), **options)
    except REDIS_ERRORS as failure:
        raise SettingsError(f"NEXTWATCH_REDIS_URL {url!r}: cannot use it as a Redis Cluster: "
                            f"{failure.__class__.__name__}: {failure}") from None
    try:
        check_slot_coverage(client)
    except SettingsError:
        client.close()
        raise
    return client


def check_slot_coverage(client: RedisCluster) -> None:
    """SettingsError unless every hash slot has a master (``CLUSTER SLOTS`` from one node)."""
    try:
        ranges = client.cluster_slots(target_nodes=RedisCluster.RANDOM)
    except REDIS_ERRORS as failure:
        raise SettingsError(f"cannot read the cluster's slot map: {failure.__class__.__name__}: {failure}") from None
    covered = sum(int(end) - int(start) + 1 for start, end in ranges)
    if covered != SLOTS:
        raise SettingsError(f"the Redis Cluster covers {covered} of its {SLOTS} hash slots: a slot without a "
                            "master would refuse every user in it (assign every slot, e.g. redis-cli --cluster "
                            "fix, before starting nextwatch)")


def is_cluster(client) -> bool:
    return isinstance(client, RedisCluster)


def is_out_of_memory(failure: redis.ResponseError) -> bool:
    """Redis answered ``-OOM command not allowed when used memory > 'maxmemory'``.

    redis-py (5 to 8) raises OutOfMemoryError for it and strips the ``OOM `` code from the
    message; inside a script or a pipeline the message gains a prefix or suffix but keeps its
    class. The text check covers clients that leave the reply as a plain ResponseError."""
    return isinstance(failure, redis.exceptions.OutOfMemoryError) or str(failure).startswith("OOM")


def translated(failure: BaseException) -> BaseException:
    """The project's error for a Redis failure, or the failure itself when it is a bug."""
    if isinstance(failure, UNREACHABLE):
        return StoreUnavailable(f"Redis is unreachable: {failure.__class__.__name__}")
    if isinstance(failure, redis.ResponseError) and is_out_of_memory(failure):
        # The message can name a pipeline's commands and their values: not repeated here.
        return StoreOutOfMemory("Redis is out of memory (maxmemory reached, nothing left to evict); "
                                "writes are refused until memory is freed")
    return failure


def translate_failures(method):
    """Decorator for store methods: a Redis that cannot be reached raises StoreUnavailable, a
    write refused at ``maxmemory`` raises StoreOutOfMemory (both 503 with Retry-After).

    Generator methods are wrapped as generators, so failures raised while the caller iterates
    (not only when the generator is created) are translated too."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def generator_wrapper(*args, **kwargs):
            try:
                yield from method(*args, **kwargs)
            except REDIS_ERRORS as failure:
                problem = translated(failure)
                if problem is failure:
                    raise
                raise problem from failure

        return generator_wrapper

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except REDIS_ERRORS as failure:
            problem = translated(failure)
            if problem is failure:
                raise
            raise problem from failure

    return wrapper
