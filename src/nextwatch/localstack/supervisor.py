"""Starting child processes, waiting until they answer, and stopping every one of them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from typing import Callable


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    return check


class Supervisor:
    """Children run in their own process groups, so that stopping one also stops whatever it
    forked (gunicorn's workers, Spark's JVM), and a Ctrl-C reaches them only through us, in order."""

    def __init__(self):
        self.children: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, command: list[str], env: dict | None = None,
              ready: Callable[[], bool] | None = None, timeout: float = 60.0) -> subprocess.Popen:
        process = subprocess.Popen(command, env={**os.environ, **(env or {})}, start_new_session=True,
                                   stdin=subprocess.DEVNULL)
        self.children.append((name, process))
        if ready is not None:
            deadline = time.monotonic() + timeout
            while not ready():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with status {process.returncode} while starting")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not become ready within {timeout:.0f} s")
                time.sleep(0.2)
        return process

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
        """SIGTERM every child's group, newest first; SIGKILL what is left after ``timeout``."""
        for _name, process in reversed(self.children):
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _name, process in reversed(self.children):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
            _signal_group(process, signal.SIGKILL)  # anything the child left behind in its group
        self.children.clear()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
