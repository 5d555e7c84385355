"""The request path's own connections (store/direct_commands.py), on a real redis-server: one per
thread, a new one in a forked child, one that Redis closed while it was idle replaced before
the next command, a script that Redis forgot loaded again, all closed by close(). And the Store's
choice of the way (store/commands.py) on both topologies: its own connections on one Redis, the
cluster client's routing on a cluster, each loading again the scripts that Redis forgot."""

import hashlib
import os
import threading
import time

import redis

from conftest import ON_BOTH_TOPOLOGIES
from nextwatch.store.commands import ClientCommands
from nextwatch.store.direct_commands import DirectCommands


def connection_id(commands: DirectCommands) -> int:
    return commands.execute("CLIENT", "ID")


def open_ids(url: str) -> set[int]:
    return {int(entry["id"]) for entry in redis.Redis.from_url(url).client_list()}


def test_a_connection_that_redis_closed_while_idle_is_replaced_before_the_next_command(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    commands = DirectCommands(client)
    commands.execute("SET", "direct:idle", b"kept")
    first = connection_id(commands)
    # Redis drops the idle connection (as on a restart or its idle timeout)...
    assert redis.Redis.from_url(redis_server.url).client_kill_filter(_id=first) == 1
    # ... and the next command goes out on a fresh one instead of failing.
    assert commands.execute("GET", "direct:idle") == b"kept"
    assert connection_id(commands) != first
    commands.close()


def test_each_thread_has_a_connection_of_its_own_and_keeps_it(redis_server):
    commands = DirectCommands(redis.Redis.from_url(redis_server.url))
    mine = connection_id(commands)
    assert connection_id(commands) == mine
    seen = []
    thread = threading.Thread(target=lambda: seen.append(connection_id(commands)))
    thread.start()
    thread.join()
    assert seen and seen[0] != mine
    commands.close()


def test_a_forked_child_never_writes_on_its_parents_socket(redis_server):
    commands = DirectCommands(redis.Redis.from_url(redis_server.url))
    parent = connection_id(commands)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the id of the connection it used, then leave at once
        try:
            os.write(writer, str(connection_id(commands)).encode())
        finally:
            os._exit(0)
    os.close(writer)
    child = int(os.read(reader, 64).decode())
    os.waitpid(pid, 0)
    os.close(reader)
    assert child != parent
    assert connection_id(commands) == parent  # the parent's connection is intact
    commands.close()


def test_a_script_that_redis_forgot_is_loaded_again(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    commands = DirectCommands(client)
    source = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
    sha = hashlib.sha1(source.encode()).hexdigest()
    client.delete("direct:counter")
    client.script_flush()
    assert commands.script(sha, source, ["direct:counter"], [2]) == 2
    assert commands.script(sha, source, ["direct:counter"], [3]) == 5
    commands.close()


def test_error_replies_raise_as_through_the_client(redis_server):
    commands = DirectCommands(redis.Redis.from_url(redis_server.url))
    commands.execute("SET", "direct:text", b"not a number")
    try:
        commands.execute("INCR", "direct:text")
    except redis.ResponseError as error:
        assert "not an integer" in str(error)
    else:
        raise AssertionError("INCR of a string should have raised ResponseError")
    assert commands.execute("GET", "direct:text") == b"not a number"  # the connection still serves
    commands.close()


def test_close_disconnects_the_connection_of_every_thread_still_running(redis_server):
    commands = DirectCommands(redis.Redis.from_url(redis_server.url))
    ids, opened, release = [connection_id(commands)], threading.Event(), threading.Event()

    def worker():
        ids.append(connection_id(commands))
        opened.set()
        release.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    assert opened.wait(10)
    assert set(ids) <= open_ids(redis_server.url) and len(set(ids)) == 2
    commands.close()
    deadline = time.monotonic() + 5  # Redis notices a closed socket on its next event loop turn
    while set(ids) & open_ids(redis_server.url) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not set(ids) & open_ids(redis_server.url)
    release.set()
    thread.join()


@ON_BOTH_TOPOLOGIES
def test_the_stores_commands_take_the_topologys_way_and_load_forgotten_scripts(store, topology):
    expected = ClientCommands if topology == "cluster" else DirectCommands
    assert type(store.commands) is expected
    assert store.users._commands is store.commands and store.api_keys._commands is store.commands
    store.client.script_flush()  # a restarted Redis (every primary of a cluster) knows no script
    first = store.users.record_watch("flushed", "C1", 1, time.time(), None)
    assert first.history.tolist() == [1]
    store.client.script_flush()
    assert store.api_keys.take_token("flushed-key", rate=1.0, burst=2.0) == 0.0
    store.client.script_flush()
    shown = store.users.record_impressions("flushed", ["C2"], [2], time.time(), None)
    assert shown.duplicate is False
    assert store.users.read("flushed").history.tolist() == [1]
