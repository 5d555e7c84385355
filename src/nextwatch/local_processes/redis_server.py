"""A private redis-server: its own port, its own data folder, AOF persistence on."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


class RedisServerError(RuntimeError):
    pass


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if nothing listens there, else any free loopback port."""
    if preferred:
        with socket.socket() as probe:
            # As servers do: a port whose old connections linger in TIME_WAIT is still free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """Starts ``redis-server`` bound to 127.0.0.1 only; ``stop()`` shuts it down cleanly."""

    def __init__(self, data_dir: str | Path, port: int | None = None, persistent: bool = True,
                 extra_args: list[str] | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.persistent = persistent
        self.extra_args = list(extra_args or [])  # more redis-server options, e.g. --cluster-enabled yes
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerError("redis-server is not installed: apt-get install redis-server")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "3600 1 300 100"]
            if self.persistent
            else ["--appendonly", "no", "--save", ""]
        )
        command = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
            "--dir", str(self.data_dir.resolve()), "--daemonize", "no", "--loglevel", "warning",
            "--logfile", str((self.data_dir / "redis.log").resolve()), *persistence, *self.extra_args,
        ]
        # A session of its own: a Ctrl-C in the terminal must not stop Redis before the processes
        # that write to it (the demo's archiver writes and acknowledges its last batch on the way out).
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.data_dir / "redis.log")
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RedisServerError(f"redis-server exited with {self.process.returncode}: {tail}")
            if self._answers_ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise RedisServerError(f"redis-server did not answer on port {self.port} within {timeout} s")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # SIGTERM: redis-server flushes the AOF and exits
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
