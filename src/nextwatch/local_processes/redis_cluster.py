"""A real Redis Cluster on loopback for tests, benchmarks and the demo: six ``redis-server``
processes (3 masters, 3 replicas by default) joined by ``redis-cli --cluster create``.

By hand, for experiments::

    PYTHONPATH=src .venv/bin/python -m nextwatch.local_processes.redis_cluster [--masters 3] [--replicas 1]

starts one in a temporary folder, prints ``NEXTWATCH_REDIS_URL=redis+cluster://127.0.0.1:p1,...``
and the nodes, and stops every process on Ctrl-C (``--help`` lists the options).

In code::

    with LocalRedisCluster(tmp_dir).start() as cluster:
        owner = cluster.master_for_key("user:42")
        cluster.kill(owner)
        cluster.wait_for_failover(cluster.keyslot("user:42"))
        cluster.wait_until_healthy()   # restarts the dead node; it rejoins as a replica

Each node listens on 127.0.0.1 only, in a folder of its own (``node-N/``: nodes.conf, redis.log,
appendonlydir/ when AOF is on); cluster_processes.py starts and stops them, cluster_view.py
judges what they say.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from .cluster_processes import (
    HOST, ClusterError, NodeProcess, pick_port_pair, server_config, start_nodes, stop_nodes,
)
from .cluster_view import (
    NOT_RUNNING, OPEN_SLOTS, ClusterMember, NodeReport, agreement_problems, parse_cluster_nodes, parse_info,
    replica_moves, shape_problems, slot_owner_claims, slot_owner_fixes,
)
from .resp import RedisReplyError, redis_command

__all__ = ["ClusterError", "ClusterMember", "LocalRedisCluster", "main"]

_ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


class LocalRedisCluster:
    """Starts, breaks, heals and stops a Redis Cluster of ``masters * (1 + replicas)`` nodes."""

    def __init__(self, base_dir: str | Path, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1500,
                 appendonly: bool = False, appendfsync: str = "everysec", options: dict[str, str] | None = None):
        if masters < 3:
            raise ValueError(f"a Redis Cluster needs at least 3 masters, not {masters}")
        self.base_dir = Path(base_dir)
        self.masters, self.replicas = masters, replicas
        self.node_timeout_ms = node_timeout_ms
        self.appendonly, self.appendfsync = appendonly, appendfsync
        self.options = dict(options or {})
        self._nodes: list[NodeProcess] = []

    # -- the addresses clients need ------------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self._nodes]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(HOST, node.port) for node in self._nodes]

    @property
    def url(self) -> str:
        """The value NEXTWATCH_REDIS_URL takes for this cluster."""
        return "redis+cluster://" + ",".join(node.address for node in self._nodes)

    # -- start and stop ------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> "LocalRedisCluster":
        """Start every node, join them, and return once the cluster is healthy; on any failure
        stop what was started and raise ClusterError saying which node failed and why."""
        deadline = time.monotonic() + timeout
        taken: set[int] = set()
        try:
            for index in range(1, self.masters * (1 + self.replicas) + 1):
                data_dir = self.base_dir / f"node-{index}"
                if data_dir.exists() and any(data_dir.iterdir()):
                    raise ClusterError(f"{data_dir} is not empty: a new cluster needs fresh node folders")
                self._nodes.append(NodeProcess(index, pick_port_pair(taken), data_dir))
            start_nodes(self._nodes, self._server_config(), deadline, taken, may_move=True)
            self._cli("create", *(node.address for node in self._nodes), "--cluster-replicas", str(self.replicas),
                      "--cluster-yes", timeout=deadline - time.monotonic(),
                      expect="[OK] All 16384 slots covered")
            self._wait_healthy(deadline, repair=False)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """End every node: SIGTERM, then SIGKILL after ``timeout``. Safe after a failed start."""
        stop_nodes(self._nodes, timeout)

    def __enter__(self) -> "LocalRedisCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what the cluster looks like -----------------------------------------------------------

    def nodes(self) -> list[ClusterMember]:
        """Every member, by port, as the first running node that answers sees it."""
        for node in self._nodes:
            if node.running:
                try:
                    return parse_cluster_nodes(redis_command(node.port, "CLUSTER", "NODES"))
                except (OSError, RedisReplyError):
                    continue
        raise ClusterError("no node of the cluster answers")

    def keyslot(self, key: str) -> int:
        return redis_command(self._any_running().port, "CLUSTER", "KEYSLOT", key)

    def master_for_slot(self, slot: int) -> ClusterMember:
        """The master the cluster says owns ``slot`` (before a failover it may be a dead one)."""
        for member in self.nodes():
            if member.role == "master" and member.owns(slot):
                return member
        raise ClusterError(f"no master owns slot {slot}")

    def master_for_key(self, key: str) -> ClusterMember:
        return self.master_for_slot(self.keyslot(key))

    def is_running(self, node: ClusterMember | int) -> bool:
        return self._node(node).running

    def health_problems(self) -> list[str]:
        """Why the cluster is not ``masters`` masters with their in-sync replicas; empty when it is."""
        reports = self._reports()
        problems = agreement_problems(reports)
        if problems:
            return problems
        return shape_problems(next(iter(reports.values())), reports, self.masters, self.replicas)

    # -- breaking it ---------------------------------------------------------------------------

    def kill(self, node: ClusterMember | int) -> None:
        """SIGKILL the node: no AOF flush, no goodbye to the others, as when a machine dies."""
        process = self._node(node).process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self, node: ClusterMember | int, timeout: float = 30.0) -> None:
        """Start a stopped node again on its port and folder; returns once it answers PING.
        It keeps its node id, and rejoins as a replica if its slots moved while it was away."""
        target = self._node(node)
        if target.running:
            raise ClusterError(f"node {target.address} is still running")
        start_nodes([target], self._server_config(), time.monotonic() + timeout, set(self.ports), may_move=False)

    def reshard(self, source: ClusterMember | int, target: ClusterMember | int, slots: int,
                timeout: float = 120.0) -> list[int]:
        """Move ``slots`` slots (with their keys) from master ``source`` to master ``target``
        with ``redis-cli --cluster reshard``, check the cluster, and return the slots moved."""
        deadline = time.monotonic() + timeout
        members = {member.port: member for member in self.nodes()}
        source_id, target_id = (members[self._node(end).port].node_id for end in (source, target))
        before = set(members[self._node(target).port].slot_list())
        self._cli("reshard", self._any_running().address, "--cluster-from", source_id, "--cluster-to", target_id,
                  "--cluster-slots", str(slots), "--cluster-yes", "--cluster-pipeline", "100",
                  timeout=deadline - time.monotonic())
        self._wait_agreed(deadline)  # replicas hear of the new owners by gossip, a moment later
        self._cli("check", self._any_running().address, timeout=deadline - time.monotonic(),
                  expect="[OK] All 16384 slots covered")
        moved = sorted(set(self._member(target).slot_list()) - before)
        if len(moved) != slots:
            raise ClusterError(f"reshard moved {len(moved)} slots to {self._node(target).address}, asked for {slots}")
        return moved

    def flushall(self) -> None:
        """Empty every running master, and wait until its replicas have emptied too."""
        for member in self.nodes():
            if member.role == "master" and self._node(member).running:
                redis_command(member.port, "FLUSHALL")
                if self.replicas:
                    redis_command(member.port, "WAIT", self.replicas, 5000)

    # -- healing -------------------------------------------------------------------------------

    def wait_for_failover(self, slot: int, timeout: float = 30.0) -> ClusterMember:
        """Wait until every running node says cluster_state:ok and names the same running master
        for ``slot``; return that master."""
        deadline = time.monotonic() + timeout
        while True:
            running = {port: report for port, report in self._reports().items() if report != NOT_RUNNING}
            claims = slot_owner_claims(running, slot)
            owners = set(claims.values())
            if len(owners) == 1 and (owner := owners.pop()) in running:
                return self._member(owner)
            if time.monotonic() > deadline:
                said = [f"node {HOST}:{port}: " + (f"{HOST}:{claim} owns it" if isinstance(claim, int) else claim)
                        for port, claim in sorted(claims.items())]
                raise self._failure(f"no running master took over slot {slot} within {timeout} s", said)
            time.sleep(0.05)

    def wait_until_healthy(self, timeout: float = 60.0) -> None:
        """Bring the cluster back to ``masters`` slot-owning masters with ``replicas`` in-sync
        replicas each: restart dead nodes, close slots a reshard left open, settle slots whose owner
        the nodes disagree on for good, give slots back to a master a reshard emptied, move replicas
        to a master without one. Quick (one round of questions) when nothing is wrong."""
        deadline = time.monotonic() + timeout
        stopped = [node for node in self._nodes if not node.running]
        start_nodes(stopped, self._server_config(), deadline, set(self.ports), may_move=False)
        self._wait_healthy(deadline, repair=True)

    # -- inside --------------------------------------------------------------------------------

    def _wait_healthy(self, deadline: float, repair: bool) -> None:
        stuck_since = None  # when a state a repair can mend was first seen: repairs wait 1 s, as
        # the nodes often mend it themselves (a restarted master turning replica, gossip catching up)
        repair_failure = None  # why the last repair failed: a failed repair is tried again (redis-cli
        # refuses while gossip is still settling), so one bad moment does not leave the cluster broken
        while True:
            reports = self._reports()
            problems = agreement_problems(reports)
            agreed = not problems
            if agreed:
                problems = shape_problems(next(iter(reports.values())), reports, self.masters, self.replicas)
                if not problems:
                    return
            mend = self._repair_for(reports, problems, agreed, deadline) if repair else None
            if mend is None:
                stuck_since = None
            elif stuck_since is None:
                stuck_since = time.monotonic()
            elif time.monotonic() - stuck_since > 1.0:
                repair_failure = _failure_of(mend)
                stuck_since = None
            if time.monotonic() > deadline:
                failed = [f"the last repair failed: {repair_failure}"] if repair_failure else []
                raise self._failure("the cluster did not become healthy in time", problems + failed)
            time.sleep(0.05)

    def _repair_for(self, reports: dict[int, NodeReport | str], problems: list[str], agreed: bool,
                    deadline: float) -> Callable[[], object] | None:
        """The repair for what is wrong, or None when there is nothing to do but wait."""
        address = self._any_running().address
        if all(OPEN_SLOTS in problem for problem in problems):  # a reshard stopped half-way
            return lambda: self._cli("fix", address, "--cluster-yes", timeout=deadline - time.monotonic())
        if not agreed:
            return self._owner_repair(reports)
        members = next(iter(reports.values())).members
        owners = [m for m in members if m.role == "master" and m.slot_count]
        if len(owners) < self.masters and any(m.role == "master" and not m.slot_count for m in members):
            return lambda: self._cli("rebalance", address, "--cluster-use-empty-masters", "--cluster-pipeline", "100",
                                     timeout=deadline - time.monotonic())
        moves = replica_moves(members, self.replicas)
        if moves:
            return lambda: [redis_command(replica.port, "CLUSTER", "REPLICATE", master) for replica, master in moves]
        return None

    def _owner_repair(self, reports: dict[int, NodeReport | str]) -> Callable[[], object] | None:
        """SETSLOT on each master that records the wrong owner for a slot the nodes disagree on
        (see slot_owner_fixes); None while a node is down or suspected, as restarts and failovers
        settle ownership themselves, and while only replicas lag, as gossip brings them along."""
        answers = list(reports.values())
        if any(isinstance(answer, str) or any(m.failing for m in answer.members) for answer in answers):
            return None
        fixes = slot_owner_fixes(answers)
        if not fixes:
            return None
        return lambda: [redis_command(port, "CLUSTER", "SETSLOT", slot, "NODE", owner)
                        for port, owners in fixes.items() for slot, owner in owners.items()]

    def _wait_agreed(self, deadline: float) -> None:
        while problems := agreement_problems(self._reports()):
            if time.monotonic() > deadline:
                raise self._failure("the nodes did not agree in time", problems)
            time.sleep(0.05)

    def _reports(self) -> dict[int, NodeReport | str]:
        reports: dict[int, NodeReport | str] = {}
        for node in self._nodes:
            if not node.running:
                reports[node.port] = NOT_RUNNING
                continue
            try:
                reports[node.port] = NodeReport(
                    node.port, parse_info(redis_command(node.port, "CLUSTER", "INFO")),
                    parse_cluster_nodes(redis_command(node.port, "CLUSTER", "NODES")),
                    parse_info(redis_command(node.port, "INFO", "replication")))
            except (OSError, RedisReplyError) as error:
                reports[node.port] = f"does not answer ({error})"
        return reports

    def _server_config(self) -> dict[str, str | int]:
        return server_config(self.node_timeout_ms, self.appendonly, self.appendfsync, self.options)

    def _cli(self, *args: str, timeout: float, expect: str | None = None) -> str:
        command = ["redis-cli", "--cluster", *args]
        try:
            result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                    timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired as error:
            raise self._failure(f"{' '.join(command)} did not finish in {error.timeout:.0f} s",
                                [str(error.stdout or "")[-2000:]]) from None
        output = _ANSI_COLOUR.sub("", result.stdout + result.stderr)  # redis-cli colours even into a pipe
        if result.returncode != 0 or "[ERR]" in output or (expect and expect not in output):
            raise self._failure(f"{' '.join(command)} failed (exit {result.returncode})", [output[-3000:]])
        return output

    def _failure(self, what: str, problems: list[str]) -> ClusterError:
        """An error that says what went wrong, with the log of every node the problems name."""
        text = "\n".join(problems)
        named = [node for node in self._nodes if node.address in text or not node.running] or self._nodes
        return ClusterError(f"{what}:\n  " + "\n  ".join(problems) + "\n" + "\n".join(n.describe() for n in named))

    def _node(self, node: ClusterMember | int) -> NodeProcess:
        port = node if isinstance(node, int) else node.port
        for candidate in self._nodes:
            if candidate.port == port:
                return candidate
        raise ClusterError(f"no node of this cluster listens on port {port}")

    def _member(self, node: ClusterMember | int) -> ClusterMember:
        port = self._node(node).port
        return next(member for member in self.nodes() if member.port == port)

    def _any_running(self) -> NodeProcess:
        for node in self._nodes:
            if node.running:
                return node
        raise ClusterError("no node of the cluster is running")


def _failure_of(repair: Callable[[], object]) -> str | None:
    """Run a repair; why it failed, or None when it went through."""
    try:
        repair()
    except (ClusterError, RedisReplyError, OSError) as error:
        return str(error)
    return None


def main(argv: list[str] | None = None) -> int:
    """Start a cluster, print its URL and nodes, and stop it on Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m nextwatch.local_processes.redis_cluster",
                                     description="A local Redis Cluster on 127.0.0.1 for experiments, "
                                                 "benchmarks and the demo.")
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1, help="replicas per master")
    parser.add_argument("--node-timeout-ms", type=int, default=1500, help="cluster-node-timeout")
    parser.add_argument("--aof", choices=["off", "everysec", "always"], default="off",
                        help="AOF persistence, with this appendfsync")
    parser.add_argument("--dir", type=Path, help="folder for the node folders (default: a temporary "
                                                  "folder, removed on exit); must not hold an old cluster")
    args = parser.parse_args(argv)
    base_dir = args.dir or Path(tempfile.mkdtemp(prefix="nextwatch-cluster-"))
    cluster = LocalRedisCluster(base_dir, masters=args.masters, replicas=args.replicas,
                                node_timeout_ms=args.node_timeout_ms, appendonly=args.aof != "off",
                                appendfsync="everysec" if args.aof == "off" else args.aof)
    # Both unwind through the finally below. SIGINT explicitly: a shell starts a background job
    # with SIGINT ignored, and a benchmark script that started us with & must still stop us.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        started = time.monotonic()
        cluster.start()
        print(f"cluster healthy after {time.monotonic() - started:.1f} s, node folders in {base_dir}")
        for member in cluster.nodes():
            print(f"  {member}" + (f" -> follows {member.master_id[:8]}" if member.master_id else ""))
        print(f"NEXTWATCH_REDIS_URL={cluster.url}", flush=True)
        print("Ctrl-C stops every node.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    except ClusterError as error:
        print(f"the cluster did not start: {error}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
        if args.dir is None:
            shutil.rmtree(base_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
