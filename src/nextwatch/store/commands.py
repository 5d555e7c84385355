"""Where the request path's commands go: a user's read, the watch and impressions scripts, a
watch's prediction and the API keys' rate limit. The stores send them through one small
interface, ``execute`` and ``script``, so that which way they travel is decided once, by the
Store (``Store.from_settings``):

- one Redis: ``DirectCommands`` (``direct_commands.py``), a connection per thread that skips
  redis-py's per-command layers;
- a Redis Cluster: ``ClientCommands``, the cluster client itself, whose routing, retries and
  slot-map refreshes stay in charge.

Both return the reply as Redis sent it (bytes, integers, lists): the commands sent this way
(GET, EVALSHA) have no response callback in the client either. Both run a script the same way
(``Commands.script``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources

import redis


class Commands:
    """What both ways share: ``script`` on top of each one's ``execute``."""

    def execute(self, *args):
        """One command's reply. Arguments are str, bytes or int."""
        raise NotImplementedError

    def script(self, sha: str, source: str, keys: list, args: list):
        """EVALSHA of ``source`` (whose SHA-1 is ``sha``), loading it first if Redis forgot it
        (a restart; on a cluster, a new or promoted node: SCRIPT LOAD goes to every primary)."""
        try:
            return self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            self.execute("SCRIPT", "LOAD", source)
            return self.execute("EVALSHA", sha, len(keys), *keys, *args)

    def close(self) -> None:
        """Close what this opened (not the client it was given)."""


class ClientCommands(Commands):
    """The calls through a client (on a cluster: routed by the keys' slot)."""

    def __init__(self, client):
        self._client = client

    def execute(self, *args):
        return self._client.execute_command(*args)


@dataclasses.dataclass(frozen=True)
class StoreScript:
    """A Lua script of the store as Redis runs it, and its SHA-1 (for EVALSHA, also in a
    pipeline)."""

    source: str
    sha: str

    @classmethod
    def of(cls, *files: str) -> "StoreScript":
        """The store's Lua ``files`` joined in order (a codec first, then the script using it)."""
        folder = importlib.resources.files(__package__)
        source = "\n".join(folder.joinpath(name).read_text() for name in files)
        return cls(source, hashlib.sha1(source.encode()).hexdigest())

