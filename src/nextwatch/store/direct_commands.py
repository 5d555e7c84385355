"""The request path's commands on one Redis connection per thread, beside redis-py's pool.

Why: redis-py 8 wraps every command in work that a hot path does not need: the pool (a lock,
a readiness check and a release a command), a retry wrapper, deprecation and observability
hooks. In one process on a loopback Redis, a GET through ``client.get`` cost 120-180 us and the
same GET sent on a connection of the thread's own 55-100 us (``bench/serve.py`` has the figures
under load). A cache hit sends one command and a watch two, so this is a large share of both.

What is kept of redis-py: its ``Connection`` (socket options, timeouts, the health check, the
RESP parser) and the pool's rule for a connection that sat idle: one that
Redis closed meanwhile (a restart, a timeout on its side) is dropped and a fresh one opened
before the command is sent, so a Redis restart costs no request once Redis is back. A failure
while a command is in flight is not retried (the client's own policy: ``retry`` 0); the
connection is dropped and the next command opens a new one.

Replies are ``read_response``'s: raw, without the client's response callbacks, so only
commands whose raw reply is what the caller reads go this way (GET, EVALSHA). Error replies
raise ``ResponseError`` subclasses, as through the client.

Only for a single Redis: on a Redis Cluster the cluster client keeps its routing, its retries
and its slot-map refreshes (``commands.py``; the Store chooses).
"""

from __future__ import annotations

import os
import threading
import weakref

import hiredis
import redis

from .commands import Commands


class DirectCommands(Commands):
    def __init__(self, client: redis.Redis):
        self._pool = client.connection_pool
        self._local = threading.local()
        self._opened: weakref.WeakSet = weakref.WeakSet()  # a finished thread's connection goes with it
        self._lock = threading.Lock()
        _LIVE.add(self)

    def _forget_connections(self) -> None:
        """In a forked child: the parent's connections are left to the parent (a child that
        wrote on their sockets would mix its replies with the parent's)."""
        self._local = threading.local()
        self._opened = weakref.WeakSet()
        self._lock = threading.Lock()

    def execute(self, *args):
        """One command's reply (raw bytes, integers, lists). Arguments are str, bytes or int."""
        connection = self._connection()
        # Packed by hiredis itself: redis-py's packer first rewrites the arguments in Python
        # (13.6 against 5.7 us for a watch's EVALSHA, timeit).
        connection.send_packed_command([hiredis.pack_command(args)])
        return connection.read_response()

    def close(self) -> None:
        with self._lock:
            opened = list(self._opened)
        for connection in opened:
            connection.disconnect()

    def _connection(self):
        local = self._local
        connection = getattr(local, "connection", None)
        if connection is None:
            pool = self._pool
            connection = local.connection = pool.connection_class(**pool.connection_kwargs)
            with self._lock:
                self._opened.add(connection)
        elif connection.is_connected and _closed_while_idle(connection):
            connection.disconnect()  # send_command connects again
        return connection


def _closed_while_idle(connection) -> bool:
    """Whether an idle connection has something to read: only an end of file (Redis closed it)
    or an error can be there, as every reply was read. The pool runs the same test."""
    try:
        return connection.can_read()
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return True


# Every instance, so that a forked child starts without its parent's connections. Checked at
# the fork, not on each command: os.getpid() is a system call, and it was 1% of a cache hit.
_LIVE: weakref.WeakSet = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for commands in list(_LIVE):
        commands._forget_connections()


os.register_at_fork(after_in_child=_after_fork_in_child)
