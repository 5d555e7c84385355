"""The redis-server processes behind a local Redis Cluster: their ports, folders, start and stop.

Ports are picked so that a node's port and its cluster bus port (port + 10000) both lie below the
kernel's ephemeral range: a client's outgoing connection can never take the bus port between
our check and the node's bind.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import subprocess
import time
from pathlib import Path

from .redis_server import free_port
from .resp import RedisReplyError, redis_command

HOST = "127.0.0.1"
BUS_OFFSET = 10000


class ClusterError(RuntimeError):
    pass


@dataclasses.dataclass
class NodeProcess:
    """One redis-server we own. Its port and folder never change once it has answered."""

    index: int
    port: int
    data_dir: Path
    process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """The end of its log and of what it wrote to stderr (config errors go there)."""
        paths = (self.data_dir / "redis.log", self.data_dir / "stderr.log")
        texts = [path.read_text(errors="replace") for path in paths if path.exists()]
        return "\n".join("\n".join(text.splitlines()[-lines:]) for text in texts if text.strip()) or "(empty log)"

    def describe(self) -> str:
        state = "running" if self.running else "stopped"
        return f"--- node-{self.index} {self.address} ({state}), {self.data_dir / 'redis.log'}:\n{self.log_tail()}"

    def spawn(self, config: dict[str, str | int]) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ClusterError("redis-server is not installed: apt-get install redis-server")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        own = {"port": self.port, "bind": HOST, "dir": self.data_dir.resolve(),
               "logfile": (self.data_dir / "redis.log").resolve()}
        command = [binary]
        for name, value in {**config, **own}.items():
            command += [f"--{name}", str(value)]
        # setpriv: the node dies with the process that started it, so a killed pytest leaves no
        # redis-server behind. The signal follows the starting *thread*: start nodes from a
        # thread that lives as long as the cluster (pytest's main thread does).
        setpriv = shutil.which("setpriv")
        if setpriv:
            command = [setpriv, "--pdeathsig", "TERM", *command]
        with open(self.data_dir / "stderr.log", "ab") as stderr:
            # A session of its own: a Ctrl-C in a terminal reaches our process, which stops the nodes.
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                                            start_new_session=True)


def server_config(node_timeout_ms: int, appendonly: bool, appendfsync: str,
                  options: dict[str, str]) -> dict[str, str | int]:
    """redis-server settings shared by every node of one cluster (``options`` override them)."""
    return {
        "protected-mode": "yes", "daemonize": "no", "loglevel": "notice", "save": "",
        "appendonly": "yes" if appendonly else "no", "appendfsync": appendfsync,
        "cluster-enabled": "yes", "cluster-config-file": "nodes.conf", "cluster-node-timeout": node_timeout_ms,
        # A replica may always be promoted, however long its link was down: tests kill masters.
        "cluster-replica-validity-factor": 0,
        # Replicas stay with the master they were given, so the shape is known after a failover;
        # LocalRedisCluster.wait_until_healthy moves them on purpose instead.
        "cluster-allow-replica-migration": "no",
        # A replica that (re)attaches syncs at once instead of waiting 5 s for company.
        "repl-diskless-sync": "yes", "repl-diskless-sync-delay": 0,
        **options,
    }


def start_nodes(nodes: list[NodeProcess], config: dict[str, str | int], deadline: float, taken: set[int],
                may_move: bool) -> None:
    """Start ``nodes`` side by side and wait until each answers PING. A fresh node whose port was
    taken between the check and its bind moves to another (``may_move``); a restarted node
    must keep its port. Anything else is a ClusterError naming the node and quoting its log."""
    for node in nodes:
        node.spawn(config)
    waiting = list(nodes)
    moves_left = 5
    while waiting:
        for node in list(waiting):
            if node.process.poll() is not None:
                log = node.log_tail()
                if may_move and moves_left and "already in use" in log:
                    moves_left -= 1
                    shutil.rmtree(node.data_dir)
                    node.port = pick_port_pair(taken)
                    node.spawn(config)
                    continue
                raise ClusterError(f"redis-server node-{node.index} ({node.address}) exited with "
                                   f"{node.process.returncode}; its log ends:\n{log}")
            try:
                if redis_command(node.port, "PING", timeout=0.5) == "PONG":
                    waiting.remove(node)
            except (OSError, RedisReplyError):  # not listening yet, or still loading its AOF
                pass
        if waiting and time.monotonic() > deadline:
            raise ClusterError("redis-server did not answer PING in time:\n"
                               + "\n".join(node.describe() for node in waiting))
        time.sleep(0.02)


def stop_nodes(nodes: list[NodeProcess], timeout: float) -> None:
    """SIGTERM every node (it writes its AOF and exits), SIGKILL what is left after ``timeout``."""
    for node in nodes:
        if node.running:
            node.process.terminate()
    deadline = time.monotonic() + timeout
    for node in nodes:
        if node.process is None:
            continue
        try:
            node.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()


def pick_port_pair(taken: set[int]) -> int:
    """A free port whose bus port (port + 10000) is free too, both below the ephemeral range;
    the port is added to ``taken``."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    high = min(ephemeral_low, 65536) - BUS_OFFSET - 1
    low = max(1024, high - 15000)
    for _ in range(500):
        port = random.randint(low, high)
        if port not in taken and free_port(port) == port and free_port(port + BUS_OFFSET) == port + BUS_OFFSET:
            taken.add(port)
            return port
    raise ClusterError(f"found no free pair of ports (port, port+{BUS_OFFSET}) with port in {low}..{high}")
