"""Starting child processes, waiting until they answer, and stopping every one of them."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200
        except (OSError, http.client.HTTPException):
            # HTTPException: something that is not an HTTP server answers on the port (yet).
            return False

    return check


LEFTOVER_GRACE_SECONDS = 2.0  # for what a stopped child left running in its group (see stop_all)


class StartError(RuntimeError):
    """A child exited, or did not answer in time, while starting."""


class Supervisor:
    """Children run in their own process groups, so that stopping one also stops whatever it
    forked and left behind (Spark's JVMs and executors), and a Ctrl-C reaches them only through
    us, in order (``stop_all``)."""

    def __init__(self):
        self.children: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, command: list[str], env: dict | None = None,
              ready: Callable[[], bool] | None = None, timeout: float = 60.0,
              log: str | Path | None = None) -> subprocess.Popen:
        """Start ``command``; with ``log``, its stdout and stderr are appended to that file."""
        output = None
        if log is not None:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            output = open(log, "ab")
        try:
            process = subprocess.Popen(command, env={**os.environ, **(env or {})}, start_new_session=True,
                                       stdin=subprocess.DEVNULL, stdout=output,
                                       stderr=subprocess.STDOUT if output else None)
        finally:
            if output is not None:
                output.close()  # the child has its own copy of the descriptor
        self.children.append((name, process))
        if ready is not None:
            self.wait_ready(name, ready, timeout)
        return process

    def wait_ready(self, name: str, ready: Callable[[], bool], timeout: float = 60.0) -> None:
        """Wait until ``ready()`` is true; fail if the child ``name`` exits first or time runs out."""
        process = self.process(name)
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                raise StartError(f"{name} exited with status {process.returncode} while starting")
            if time.monotonic() > deadline:
                raise StartError(f"{name} did not become ready within {timeout:.0f} s")
            time.sleep(0.2)

    def process(self, name: str) -> subprocess.Popen:
        return next(process for child, process in self.children if child == name)

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.children}

    def run(self, name: str, command: list[str], env: dict | None = None) -> int:
        """Run a command to its end (still stopped with the others if we are interrupted)."""
        process = self.start(name, command, env)
        try:
            return process.wait()
        finally:
            self.children.remove((name, process))

    def first_exited(self) -> tuple[str, int] | None:
        for name, process in self.children:
            if process.poll() is not None:
                return name, process.returncode
        return None

    def stop_all(self, timeout: float = 15.0) -> None:
        """Stop every child, newest first, and whatever it started; SIGKILL what is left after
        ``timeout``.

        SIGTERM goes to each child itself first, not to its whole group: a server that manages
        workers (granian's main process) then stops them in its own order. Signalled together,
        a worker could stop before the main process knew, which logged it as a crash
        ("Unexpected exit from worker-1") and began to replace it. Once a child has exited, what
        it left in its group (a wrapper's child) gets SIGTERM and LEFTOVER_GRACE_SECONDS, then
        SIGKILL.

        Descendants that moved to a group of their own (a notebook server's kernels, say) are
        listed before anything is signalled, and get SIGTERM at once, one by one: otherwise they
        would outlive us, reparented to init."""
        escaped = self._escaped_descendants()
        for _name, process in reversed(self.children):
            _signal_pid(process.pid, signal.SIGTERM)
        for pid in escaped:
            _signal_pid(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _name, process in reversed(self.children):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
            _stop_group(process, min(LEFTOVER_GRACE_SECONDS, max(0.0, deadline - time.monotonic())))
        while escaped and time.monotonic() < deadline:
            escaped = {pid: start for pid, start in escaped.items() if _same_process(pid, start)}
            time.sleep(0.1)
        for pid, start in escaped.items():
            if _same_process(pid, start):
                _signal_pid(pid, signal.SIGKILL)
        self.children.clear()

    def _escaped_descendants(self) -> dict[int, int]:
        """{pid: start time} of every running descendant outside its child's process group."""
        leaders = {process.pid for _name, process in self.children if process.poll() is None}
        table = _process_table()
        found: set[int] = set()
        frontier = set(leaders)
        while frontier:
            frontier = {pid for pid, (parent, _group, _start) in table.items() if parent in frontier} - found
            found |= frontier
        return {pid: table[pid][2] for pid in found if table[pid][1] not in leaders}


def _process_table() -> dict[int, tuple[int, int, int]]:
    """{pid: (parent pid, process group, start time)} of every running process, from /proc (an
    exited one that no parent has reaped yet is left out: where nothing reaps orphans, it would
    stay forever)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and fields[0] != "Z":
                table[int(entry)] = (int(fields[1]), int(fields[2]), int(fields[19]))
    return table


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces): state, ppid, pgrp ..."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _same_process(pid: int, start: int) -> bool:
    """The process that had ``pid`` at ``start`` is still running (not a new one reusing it)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != "Z" and int(fields[19]) == start


def _stop_group(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM to what is left in an exited child's group; SIGKILL to what is left after
    ``grace`` seconds."""
    _signal_group(process, signal.SIGTERM)
    until = time.monotonic() + grace
    while _group_alive(process) and time.monotonic() < until:
        time.sleep(0.05)
    _signal_group(process, signal.SIGKILL)


def _group_alive(process: subprocess.Popen) -> bool:
    return any(group == process.pid for _parent, group, _start in _process_table().values())


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
