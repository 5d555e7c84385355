"""Per-user state in Redis: watch history and cached prediction in one key (``user_state.py``
has the layout), remembered event ids, impressions.

Every method returns typed values (numpy code arrays, the dataclasses of ``user_state.py``),
never Redis bytes.
"""

from __future__ import annotations

import json

import numpy as np
import redis

from ..errors import ReplicasBehind, StoreUnavailable
from ..keys import Keys
from ..settings import Settings
from .commands import Commands, StoreScript
from .connection import is_cluster, translate_failures
from .user_state import (CODE, MAX_IMPRESSIONS, CachedPrediction, PendingWatch, RecordedImpressions, RecordedWatch,
                         RepeatedEvent, UserState, decode_codes, decode_state, encode_codes)

REDIRECTS_FOLLOWED = 4  # MOVED/ASK answers followed by a durable watch before it answers 503


class UserStore:
    def __init__(self, client, keys: Keys, settings: Settings, commands: Commands):
        """``commands``: the way of the request path's commands (``commands.py``)."""
        self.client = client
        self.keys = keys
        self.settings = settings
        # Each script with the user-state codec (user_state.lua) before it.
        self._watch = StoreScript.of("user_state.lua", "watch.lua")
        self._cache = StoreScript.of("user_state.lua", "cache_prediction.lua")
        self._impressions = StoreScript.of("user_state.lua", "impressions.lua")
        self._sources = {script.sha: script.source for script in (self._watch, self._cache)}
        self._cluster = is_cluster(client)
        self._commands = commands

    @translate_failures
    def read(self, user_id: str) -> UserState:
        """One GET: the history and the cached prediction."""
        key = self.keys.user(user_id)
        raw = self._commands.execute("GET", key)
        history, impressions, cached = decode_state(raw)
        return UserState(cached, history, impressions)

    @translate_failures
    def record_watch(self, user_id: str, content_id: str, code: int, timestamp: float, event_id: str | None,
                     model_version: int = 0) -> RecordedWatch | RepeatedEvent:
        """One round trip (a Lua script): append to history, invalidate the cached prediction,
        append to the shard's event log, and hand back what scoring needs (``model_version``:
        the version the caller predicts with, kept in an event id's pending marker). With
        ``write_replicas``, the same round trip then WAITs for that many replicas (same
        connection, so WAIT covers this script's writes) and raises ReplicasBehind if they did
        not confirm in time."""
        keys = [
            self.keys.user(user_id),
            self.keys.user_event_log(user_id),
            self.keys.event_id(user_id, event_id or "-"),
        ]
        durable = self.settings.write_replicas > 0
        args = [
            encode_codes([code]),
            self.settings.history_length,
            user_id,
            content_id,
            repr(timestamp),
            event_id or "",
            self.settings.event_id_ttl_seconds,
            max(1, self.settings.event_log_max_length // self.keys.shards),
            model_version,
            "1" if durable else "0",
            self.settings.impression_window_seconds,
        ]
        if durable:
            reply = self._record_and_wait(keys, args)
        else:
            reply = self._commands.script(self._watch.sha, self._watch.source, keys, args)
        if reply[0] == b"duplicate":
            return _repeated(reply[1])
        _, history, previous, stream_id, shown_lately = reply
        return RecordedWatch(decode_codes(history), CachedPrediction.decode(previous), stream_id.decode(),
                             shown_lately=bool(shown_lately))

    @translate_failures
    def record_impressions(self, user_id: str, content_ids: list[str], codes: list[int], timestamp: float,
                           event_id: str | None) -> RecordedImpressions:
        """One round trip (impressions.lua): count each shown title for the user (demoting those
        shown too often without a watch), log one event-log entry per title (kind
        ``impression``), remember the answer for the event id."""
        keys = [self.keys.user(user_id), self.keys.user_event_log(user_id),
                self.keys.impressions_event_id(user_id, event_id or "-")]
        settings = self.settings
        args = [encode_codes(codes), repr(timestamp), settings.impression_cap, settings.impression_demotion_seconds,
                MAX_IMPRESSIONS, user_id, event_id or "", settings.event_id_ttl_seconds,
                max(1, settings.event_log_max_length // self.keys.shards), *content_ids]
        reply = self._commands.script(self._impressions.sha, self._impressions.source, keys, args)
        answer = json.loads(reply[1])
        if not isinstance(answer.get("demoted"), list):  # Lua's JSON writes an empty list as {}
            answer["demoted"] = []
        return RecordedImpressions(answer, duplicate=reply[0] == b"duplicate")

    def _record_and_wait(self, keys: list, args: list):
        """The watch script and WAIT in one round trip on one connection (so WAIT covers the
        script's writes) of the node holding the user's slot."""
        replicas = self.settings.write_replicas
        timeout_ms = max(1, int(self.settings.write_replicas_timeout_seconds * 1000))
        reply, confirmed = self._on_users_node(keys[0], [("EVALSHA", self._watch.sha, len(keys), *keys, *args),
                                                         ("WAIT", replicas, timeout_ms)])
        if int(confirmed) < replicas:
            raise ReplicasBehind(f"the watch is recorded but only {int(confirmed)} of {replicas} replicas "
                                 f"confirmed it within {timeout_ms} ms; retry with the same event_id",
                                 retry_after_seconds=1)
        return reply

    def _on_users_node(self, key: str, commands: list[tuple]) -> list:
        """``commands`` pipelined on one connection of the node that holds ``key``'s slot (on a
        single Redis, the one Redis), their replies in order; the first command may be a script.
        A cluster pipeline cannot carry a script, nor keep WAIT on the connection of the write it
        waits for, hence this: it follows MOVED and ASK (a slot that moved, a replica promoted:
        nothing ran then) as the cluster client does for its own commands, and loads a script
        that Redis forgot, then runs that script again and any WAIT (the other commands ran)."""
        target, asking = self._node_client(key), False
        for _attempt in range(REDIRECTS_FOLLOWED):
            # One Redis: its commands' own way. A cluster node's client: that node's connection.
            replies = _pipelined(target, commands, asking, self._commands if target is self.client else None)
            first = replies[0]
            if isinstance(first, redis.exceptions.NoScriptError):
                target.script_load(self._sources[commands[0][1]])
                again = [0] + [i for i, command in enumerate(commands) if command[0] == "WAIT"]
                for i, reply in zip(again, _pipelined(target, [commands[i] for i in again], asking)):
                    replies[i] = reply
            elif isinstance(first, redis.exceptions.AskError):  # MovedError is one too
                moved = isinstance(first, redis.exceptions.MovedError)
                if moved:
                    self.client.nodes_manager.move_slot(first)  # the map learns the new owner
                target, asking = self._client_at(first.host, first.port), not moved
                continue
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return replies
        raise StoreUnavailable("the slot of the user kept moving; retry")

    def _node_client(self, key: str):
        """A client for the one Redis that holds ``key``: itself on a single Redis."""
        if not self._cluster:
            return self.client
        return self.client.get_redis_connection(self.client.get_node_from_key(key))

    def _client_at(self, host: str, port: int):
        node = self.client.get_node(host=host, port=port)
        if node is None:  # a node the map does not know yet: learn the map again
            self.client.nodes_manager.initialize()
            node = self.client.get_node(host=host, port=port)
        if node is None:
            raise StoreUnavailable(f"Redis sent the user's slot to {host}:{port}, which the cluster does not list")
        return self.client.get_redis_connection(node)

    @translate_failures
    def save_prediction(self, user_id: str, model_version: int, history: np.ndarray, codes,
                        answer: tuple[str, dict] | None = None, after_watch: bool = False,
                        extra: list[tuple] | tuple = ()) -> bool:
        """One round trip (cache_prediction.lua, and for an event id the answer that a retry of
        the same event gets, both in the user's slot): cache the prediction in the user's state
        while the history is still the one it was computed from. ``after_watch``: only if none
        is cached (the watch just recorded dropped it; one there now was written since, for this
        history or a newer one). ``extra``: more commands on keys of the user's slot, sent in the
        same round trip (an experiment's counts). ``model_version`` is what the stamp is computed
        from (a serving variant's key, service/ranking.py). True if the prediction was cached."""
        history = np.asarray(history, dtype=CODE)
        args = [history.tobytes(), CachedPrediction.encode(model_version, history, codes), "1" if after_watch else "0"]
        key = self.keys.user(user_id)
        commands = [("EVALSHA", self._cache.sha, 1, key, *args)]
        if answer is not None:
            event_id, body = answer
            commands.append(("SET", self.keys.event_id(user_id, event_id), _answer_bytes(body),
                             "EX", self.settings.event_id_ttl_seconds))
        return int(self._on_users_node(key, commands + list(extra))[0]) == 1

    @translate_failures
    def run_in_users_slot(self, user_id: str, commands: list[tuple]) -> list:
        """``commands`` (on keys of the user's slot) in one round trip to the user's node."""
        return self._on_users_node(self.keys.user(user_id), commands)

    @translate_failures
    def save_answer(self, user_id: str, event_id: str, body: dict) -> None:
        """The answer to an event id, for its later retries (see ``save_prediction``)."""
        self.client.set(self.keys.event_id(user_id, event_id), _answer_bytes(body),
                        ex=self.settings.event_id_ttl_seconds)


def _pipelined(target, commands: list[tuple], asking: bool, own: Commands | None = None) -> list:
    """The replies of ``commands`` sent in one round trip; ``asking``: each after an ASKING (it
    holds for the next command only), for a slot that is moving to ``target``. One command (a
    watch's prediction, the usual case) goes without a pipeline, which costs redis-py about as
    much again as the command, and through ``own`` when given (``target``'s request-path
    commands); its error comes back as a reply, as a pipeline's would."""
    if len(commands) == 1 and not asking:
        try:
            if own is not None:
                return [own.execute(*commands[0])]
            return [target.execute_command(*commands[0])]
        except redis.exceptions.ResponseError as error:
            return [error]
    pipe = target.pipeline(transaction=False)
    for command in commands:
        if asking:
            pipe.execute_command("ASKING")
        pipe.execute_command(*command)
    replies = pipe.execute(raise_on_error=False)
    return replies[1::2] if asking else replies


def _answer_bytes(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _repeated(stored: bytes) -> RepeatedEvent:
    if stored.startswith(b"pending"):
        return RepeatedEvent(None, PendingWatch.decode(stored))
    return RepeatedEvent(json.loads(stored), None)
