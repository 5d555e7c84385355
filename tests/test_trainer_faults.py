"""`nextwatch train` killed with SIGKILL mid-run: while Spark runs, and at each step of
publishing the model. The previously current model keeps serving, no half-written version is
ever listed, and the next run completes, deletes what the killed runs left and becomes current.

To stop a run at an exact step of the publish without a test branch in the product, the
trainer talks to Redis through `RedisGate`, a TCP proxy in this test that forwards whole Redis
commands until one matches a condition, then holds that command and all after it. The test
SIGKILLs the trainer's process group (its Python process and Spark's JVM) while it is held, so
Redis has seen exactly the commands before the chosen step and nothing after it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from conftest import DEFAULT_NEIGHBOURS, publish_test_model
from nextwatch.datasets.demo_dataset import DemoConfig, write_demo_dataset
from nextwatch.local_processes.redis_server import RedisServer, free_port
from nextwatch.local_processes.supervisor import Supervisor, http_ok
from nextwatch.settings import Settings
from nextwatch.store import Store

PREFIX = "nwfault"
RUN_TIMEOUT = 600  # seconds for one training run on a busy two-core machine
GLOBAL_MODEL_KEYS = {f"{PREFIX}:{{model}}:current", f"{PREFIX}:{{model}}:seq", f"{PREFIX}:{{model}}:versions"}
KEYS_PER_VERSION = 5  # meta + popularity, neighbour_offsets, neighbour_codes, neighbour_scores (one chunk each)


# -- the gate ----------------------------------------------------------------------------------

def split_commands(buffer: bytearray) -> list[tuple[bytes, list[bytes]]]:
    """Take the complete RESP commands (arrays of bulk strings, as redis-py sends them) off the
    front of ``buffer``: [(raw bytes, [arguments])]. An incomplete command stays in it."""
    commands = []
    while buffer:
        if buffer[:1] != b"*":
            raise ValueError(f"not a RESP array: {bytes(buffer[:20])!r}")
        end = buffer.find(b"\r\n")
        if end < 0:
            break
        count, position, arguments = int(buffer[1:end]), end + 2, []
        for _ in range(count):
            end = buffer.find(b"\r\n", position)
            if end < 0:
                break
            length = int(buffer[position + 1 : end])
            if len(buffer) < end + 2 + length + 2:
                break
            arguments.append(bytes(buffer[end + 2 : end + 2 + length]))
            position = end + 2 + length + 2
        if len(arguments) < count:
            break
        commands.append((bytes(buffer[:position]), arguments))
        del buffer[:position]
    return commands


class RedisGate:
    """127.0.0.1 proxy to Redis. Forwards each whole command unless ``hold_when(arguments)``
    is true; from that command on it forwards nothing more (on any connection) and sets
    ``held``. The first arguments of every forwarded command are kept in ``forwarded``."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.arm(lambda arguments: False)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def arm(self, hold_when) -> None:
        with self.lock:
            self.hold_when = hold_when
            self.held = threading.Event()
            self.forwarded: list[tuple[str, ...]] = []

    def saw(self, name: str, argument: str) -> bool:
        """Whether a command ``name`` with ``argument`` among its first arguments went through."""
        with self.lock:
            return any(command[0] == name and argument in command[1:] for command in self.forwarded)

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
            threading.Thread(target=self._gate, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                end.close()

    def _gate(self, client: socket.socket, upstream: socket.socket) -> None:
        buffer = bytearray()
        try:
            while data := client.recv(65536):
                buffer += data
                for raw, arguments in split_commands(buffer):
                    with self.lock:
                        if not self.held.is_set() and self.hold_when(arguments):
                            self.held.set()
                        if self.held.is_set():
                            continue  # held: dropped when the client dies
                        self.forwarded.append((arguments[0].decode().upper(),
                                               *(a.decode(errors="replace") for a in arguments[1:5])))
                    upstream.sendall(raw)
        except OSError:
            pass
        finally:
            for end in (client, upstream):
                end.close()


def command_is(name: str, key: str, nth: int = 1):
    """A hold condition: the ``nth`` command ``name`` on ``key`` (a regular expression)."""
    seen = 0

    def matches(arguments: list[bytes]) -> bool:
        nonlocal seen
        if arguments[0].decode().upper() == name and len(arguments) > 1 and re.fullmatch(key, arguments[1].decode()):
            seen += 1
            return seen == nth
        return False

    return matches


# -- the trainer -------------------------------------------------------------------------------

class Trainer:
    """`nextwatch train` in its own process group, talking to Redis through the gate."""

    def __init__(self, gate: RedisGate, events: str, scratch):
        env = {**os.environ, "NEXTWATCH_REDIS_URL": gate.url, "NEXTWATCH_KEY_PREFIX": PREFIX,
               # Held at the gate, the trainer waits for Redis instead of giving up after 1 s.
               "NEXTWATCH_REDIS_TIMEOUT": "60", "SPARK_LOCAL_IP": "127.0.0.1",
               # What a killed run leaves on disk stays in the test's folder.
               "TMPDIR": str(scratch), "SPARK_LOCAL_DIRS": str(scratch)}
        self.process = subprocess.Popen([sys.executable, "-m", "nextwatch.cli", "train", "--no-event-log",
                                         "--events", events], env=env, start_new_session=True,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines[-60:])

    def group(self) -> list[int]:
        """Live processes of the trainer's process group (the Python process, Spark's JVM ...)."""
        members = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as stat:
                        fields = stat.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if fields[0] != "Z" and int(fields[2]) == self.process.pid:
                    members.append(int(entry))
        return members

    def jvm_running(self) -> bool:
        for pid in self.group():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    if b"java" in cmdline.read().split(b"\0")[0]:
                        return True
            except OSError:
                pass
        return False

    def wait_until(self, condition, what: str) -> None:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not condition():
            assert self.process.poll() is None, f"the trainer exited before {what}:\n{self.output}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.output}"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.process.poll() is None, f"the trainer ended before it was killed:\n{self.output}"
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while self.group():  # Spark's JVM goes with it: nothing of the run is left running
            assert time.monotonic() < deadline, f"processes of the killed trainer remain: {self.group()}"
            time.sleep(0.1)
        self.reader.join(timeout=10)

    def finish(self) -> str:
        try:
            self.process.wait(timeout=RUN_TIMEOUT)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.reader.join(timeout=10)
        assert self.process.returncode == 0, self.output
        return self.output


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fault_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("fault-redis"), persistent=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fault_store(fault_redis):
    store = Store.from_settings(Settings(redis_url=fault_redis.url, key_prefix=PREFIX, models_kept=3))
    store.client.flushall()
    publish_test_model(store, DEFAULT_NEIGHBOURS)  # the model serving before any training run
    yield store
    store.close()


@pytest.fixture(scope="module")
def gate(fault_redis):
    return RedisGate(fault_redis.port)


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    dataset = write_demo_dataset(tmp_path_factory.mktemp("fault-data"),
                                 DemoConfig(titles=60, viewers=80, mean_watches=8, seed=11))
    return str(dataset.events_path)


@pytest.fixture(scope="module")
def api(fault_redis, fault_store):
    """`nextwatch serve` on the same Redis (directly, not through the gate)."""
    port = free_port()
    supervisor = Supervisor()
    env = {"NEXTWATCH_REDIS_URL": fault_redis.url, "NEXTWATCH_KEY_PREFIX": PREFIX}
    supervisor.start("api", [sys.executable, "-m", "nextwatch.cli", "serve", "--port", str(port), "--workers", "1"],
                     env, ready=http_ok(f"http://127.0.0.1:{port}/readyz"), timeout=60)
    url = f"http://127.0.0.1:{port}"
    watched = requests.post(f"{url}/watched", json={"user_id": "viewer", "content_id": "C1010"}, timeout=10)
    assert watched.status_code == 200 and watched.json()["source"] == "model"
    yield url
    supervisor.stop_all()


# -- what must hold after a kill and after the next run ------------------------------------------

def model_keys(store) -> set[str]:
    return {key.decode() for key in store.client.scan_iter(match=f"{PREFIX}:{{model}}:*", count=1000)}


def version_keys(store, version: int) -> set[str]:
    return {key for key in model_keys(store) if key.startswith(f"{PREFIX}:{{model}}:{version}:")}


def listed_versions(fault_redis) -> tuple[list[int], int | None]:
    """`nextwatch models list`: the versions it shows and the one marked current."""
    env = {**os.environ, "NEXTWATCH_REDIS_URL": fault_redis.url, "NEXTWATCH_KEY_PREFIX": PREFIX}
    result = subprocess.run([sys.executable, "-m", "nextwatch.cli", "models", "list"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^([* ]) +(\d+) ", result.stdout, flags=re.MULTILINE)
    current = [int(version) for mark, version in rows if mark == "*"]
    assert len(current) == 1, result.stdout
    return [int(version) for _, version in rows], current[0]


def assert_still_serving(store, fault_redis, api, current: int, registered: list[int]) -> None:
    """The version that was current still is, and serves; only whole versions are listed."""
    assert store.models.current_version() == current
    assert store.models.versions() == registered
    assert listed_versions(fault_redis) == (registered, current)
    for version in registered:  # every listed version loads whole
        assert store.models.load(version) is not None, version
    answer = requests.get(f"{api}/recommend/viewer?k=3", timeout=10)
    assert answer.status_code == 200 and answer.json()["model_version"] == current, answer.text
    assert requests.get(f"{api}/readyz", timeout=10).status_code == 200


def assert_recovered(store, fault_redis, api, trainer_output: str, registered_before: list[int],
                     killed: list[int]) -> int:
    """The run after the kills published the next version, made it current, kept the newest
    three and deleted every key of the killed runs' unlisted versions: the model keys are
    exactly the three global ones and five per listed version."""
    published = int(re.search(r"published model version (\d+)", trainer_output).group(1))
    expected = sorted(set(registered_before) | {published})[-3:]
    assert store.models.current_version() == published
    assert store.models.versions() == expected
    assert listed_versions(fault_redis) == (expected, published)
    keys = model_keys(store)
    assert len(keys) == len(GLOBAL_MODEL_KEYS) + KEYS_PER_VERSION * len(expected), sorted(keys)
    assert keys == GLOBAL_MODEL_KEYS | {key for version in expected for key in version_keys(store, version)}
    for version in killed:
        if version not in expected:
            assert version_keys(store, version) == set(), version
    assert requests.get(f"{api}/recommend/viewer", timeout=10).json()["model_version"] == published
    return published


# -- the tests ---------------------------------------------------------------------------------

def test_killed_while_spark_runs(gate, fault_store, fault_redis, events, api, tmp_path):
    """Killed twice while Spark runs (just started; fitting, after the catalog codes are
    registered): nothing of the model is written, the old one serves; the next run recovers."""
    store = fault_store
    current, registered = store.models.current_version(), store.models.versions()
    sequence, keys_before = int(store.client.get(f"{PREFIX}:{{model}}:seq")), model_keys(store)

    def publishing(arguments):  # a safety net: a run that gets this far is held, never publishes
        return arguments[0].upper() in (b"INCR", b"INCRBY") and arguments[1] == f"{PREFIX}:{{model}}:seq".encode()

    # 1. Spark's JVM has started and is reading the events.
    gate.arm(publishing)
    trainer = Trainer(gate, events, tmp_path)
    trainer.wait_until(trainer.jvm_running, "Spark's JVM started")
    time.sleep(2.0)
    assert not gate.held.is_set()
    trainer.kill()
    assert model_keys(store) == keys_before
    assert int(store.client.get(f"{PREFIX}:{{model}}:seq")) == sequence
    assert_still_serving(store, fault_redis, api, current, registered)

    # 2. The titles' codes are registered and Spark is fitting the model.
    gate.arm(publishing)
    trainer = Trainer(gate, events, tmp_path)
    title_codes = f"{PREFIX}:{{titles}}:code"
    trainer.wait_until(lambda: gate.saw("EVALSHA", title_codes) or gate.saw("EVAL", title_codes),
                       "the catalog codes registered")
    time.sleep(1.0)
    assert not gate.held.is_set(), "the run reached publishing: it was not killed while Spark ran"
    trainer.kill()
    assert model_keys(store) == keys_before
    assert int(store.client.get(f"{PREFIX}:{{model}}:seq")) == sequence
    assert_still_serving(store, fault_redis, api, current, registered)

    # The next run completes and becomes current.
    gate.arm(lambda arguments: False)
    output = Trainer(gate, events, tmp_path).finish()
    published = assert_recovered(store, fault_redis, api, output, registered, killed=[])
    assert published == sequence + 1


def test_killed_at_each_step_of_publishing(gate, fault_store, fault_redis, events, api, tmp_path):
    """Killed after the first array of the new version is written, after all of it is written
    but before it is registered, and after it is registered but before it is current: the old
    version serves throughout and no partial version is listed; the next run deletes the
    unlisted leftovers and becomes current."""
    store = fault_store
    current, registered = store.models.current_version(), store.models.versions()
    array = rf"{PREFIX}:{{model}}:\d+:array:.*"
    steps = [
        # (hold at, the keys of the new version that Redis then holds, listed?)
        (command_is("SET", array, nth=2), 1, False),
        (command_is("ZADD", f"{PREFIX}:{{model}}:versions"), KEYS_PER_VERSION, False),
        (command_is("SET", f"{PREFIX}:{{model}}:current"), KEYS_PER_VERSION, True),
    ]
    killed = []
    for hold_at, written, listed in steps:
        sequence = int(store.client.get(f"{PREFIX}:{{model}}:seq"))
        keys_before = model_keys(store)
        gate.arm(hold_at)
        trainer = Trainer(gate, events, tmp_path)
        trainer.wait_until(gate.held.is_set, "the publish step")
        trainer.kill()
        version = sequence + 1
        killed.append(version)
        assert int(store.client.get(f"{PREFIX}:{{model}}:seq")) == version
        assert keys_before <= model_keys(store)  # nothing of the versions before was touched
        new_keys = model_keys(store) - keys_before
        assert new_keys == version_keys(store, version) and len(new_keys) == written, sorted(new_keys)
        if listed:  # whole and registered, but never made current
            registered = registered + [version]
            assert store.models.load(version) is not None
        assert_still_serving(store, fault_redis, api, current, registered)

    gate.arm(lambda arguments: False)
    output = Trainer(gate, events, tmp_path).finish()
    published = assert_recovered(store, fault_redis, api, output, registered, killed)
    assert published == killed[-1] + 1
