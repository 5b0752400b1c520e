"""A background service process of the local stack, tracked by its PID file.

The stack starts its services detached from the ``m2m`` command (their own session, output
to a log file) so they outlive it, and stops exactly the processes it started: a PID is
only trusted while that process's command line still holds the service's marker (a path
only its command names), so a recycled PID is never signalled.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from m2m.errors import M2MError


class StackError(M2MError):
    """The local stack cannot be provisioned, started or stopped; the message says why."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    what: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port} ({self.what})"

    def is_open(self, timeout: float = 0.5) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout):
                return True
        except OSError:
            return False


@dataclass
class ServiceProcess:
    """One service of the stack: how to start it, where it listens and how to tell it is well."""

    name: str
    command: Sequence[str]
    run_dir: Path
    endpoints: Sequence[Endpoint]
    is_healthy: Callable[[], bool]
    marker: str
    """A string only this service's command line holds (a path of its own)."""
    start_timeout: float
    prepare: Callable[[], None] = lambda: None
    """Writes what the service reads at start (its configuration files)."""
    env: dict[str, str] = field(default_factory=dict)
    _started: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The PID of our running process, or None (no file, dead, or a recycled PID)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        marker = os.fsencode(self.marker)
        return pid if any(marker in arg for arg in cmdline) else None

    def start(self) -> int:
        """Start the process unless it already runs; returns its PID."""
        running = self.pid()
        if running is not None:
            return running
        for endpoint in self.endpoints:
            if endpoint.is_open():
                raise StackError(
                    f"{self.name}: port {endpoint} is already taken by a process this stack "
                    f"did not start; stop it or change the port"
                )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                list(self.command),
                cwd=self.run_dir,  # whatever a service drops in its cwd stays in its state
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **self.env},
            )
        self.pid_file.write_text(f"{process.pid}\n")
        self._started = process
        return process.pid

    def _alive(self) -> bool:
        # Right after the start, /proc may not show the new command line yet: ask the child.
        if self._started is not None:
            return self._started.poll() is None
        return self.pid() is not None

    def wait_healthy(self) -> None:
        """Wait until the service answers; a dead process or a timeout is a StackError."""
        timeout = self.start_timeout
        deadline = time.monotonic() + timeout
        while True:
            if not self._alive():
                raise StackError(
                    f"{self.name} exited during start-up; see its log: {self.log_file}"
                    f"{_tail(self.log_file)}"
                )
            if self.is_healthy():
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"{self.name} did not become healthy within {timeout:.0f}s; "
                    f"see its log: {self.log_file}"
                )
            time.sleep(0.5)

    def stop(self, kill: bool = False, timeout: float = 60.0) -> bool:
        """Stop our process: TERM, then KILL after ``timeout`` (at once with ``kill``, as a
        crash would). False if it was not running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.pid() is not None:
            os.kill(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n" + "\n".join("  | " + line for line in text) if text else ""
