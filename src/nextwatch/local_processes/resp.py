"""Just enough of the Redis protocol (RESP2) for the local tooling to ask a node a question.

The launchers in this package must not import redis-py (tests/test_layers.py keeps redis inside
store/), and a handful of admin commands over a fresh loopback connection is all they need.
"""

from __future__ import annotations

import socket


class RedisReplyError(RuntimeError):
    """The node answered with an error reply (``-ERR ...``, ``-MOVED ...``)."""


def redis_command(port: int, *args: str | int, host: str = "127.0.0.1", timeout: float = 2.0):
    """Send one command and return the reply: str for simple and bulk strings, int, list or None.

    Raises OSError when the node cannot be reached and RedisReplyError for an error reply."""
    request = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = str(arg).encode()
        request.append(b"$%d\r\n%s\r\n" % (len(data), data))
    with socket.create_connection((host, port), timeout=timeout) as connection:
        connection.sendall(b"".join(request))
        with connection.makefile("rb") as reply:
            return _read_reply(reply)


def _read_reply(reply):
    line = reply.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError(f"connection closed in the middle of a reply ({line!r})")
    kind, body = line[:1], line[1:-2].decode()
    if kind == b"+":
        return body
    if kind == b"-":
        raise RedisReplyError(body)
    if kind == b":":
        return int(body)
    if kind == b"$":
        length = int(body)
        if length < 0:
            return None
        data = reply.read(length + 2)
        if len(data) != length + 2:
            raise ConnectionError("connection closed in the middle of a bulk string")
        return data[:-2].decode()
    if kind == b"*":
        length = int(body)
        return None if length < 0 else [_read_reply(reply) for _ in range(length)]
    raise ConnectionError(f"not a RESP2 reply: {line!r}")
