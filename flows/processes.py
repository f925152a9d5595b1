"""The processes ``scopeflow up`` starts: each in its own session, known by pid and start time.

``spawn`` starts one, ``wait_until`` waits for it to answer (or reports its log's tail when it
dies first), ``stop`` ends its whole process group. A recorded process whose start time no
longer matches is another process that reuses the pid: it is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from flows.deploy import ROOT
from scopeflow.errors import ServiceError

LOG_TAIL = 2000  # characters of a dead process's log shown in its error

_STARTED: list[subprocess.Popen[bytes]] = []


@dataclass
class Service:
    """A process ``up`` started: its pid and start time (psutil's, seconds since the epoch)."""

    name: str
    pid: int
    create_time: float
    cmd: list[str]
    log: str
    url: str = ""

    def process(self) -> psutil.Process | None:
        """The live process, or None when it exited or its pid now belongs to another process."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.05 or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.NoSuchProcess:
            return None

    def alive(self) -> bool:
        return self.process() is not None


# ---------------------------------------------------------------------------------- ports
def port_owner(host: str, port: int) -> str:
    """Which process listens on ``port`` (pid and name), as far as this user may see."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid is None:
                    return "another user's process"
                with contextlib.suppress(psutil.Error):
                    return f"pid {conn.pid} ({' '.join(psutil.Process(conn.pid).cmdline()[:4])})"
                return f"pid {conn.pid}"
    return "an unknown process"


def check_port(host: str, port: int, what: str, flag: str) -> None:
    """Raise a ``ServiceError`` naming the owner when ``host:port`` cannot be bound."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise ServiceError(
                f"port {port} on {host} (the {what}) is taken by {port_owner(host, port)}: "
                f"stop it, or choose another with {flag}"
            ) from None


# ---------------------------------------------------------------------------------- processes
def _log_tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-LOG_TAIL:]
    return ""


def spawn(name: str, cmd: list[str], env: Mapping[str, str], log: Path, url: str = "") -> Service:
    """Start ``cmd`` in its own session (so ``stop`` can end it with its children), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        created = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        created = 0.0
    # The process outlives this one (``down`` ends it by pid); the handle is only kept alive.
    _STARTED.append(proc)
    return Service(name, proc.pid, created, cmd, str(log), url)


def wait_until(service: Service, ready: Callable[[], bool], timeout_s: float) -> None:
    """Poll ``ready`` until true; a ``ServiceError`` with the log's tail if the process exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not service.alive():
            raise ServiceError(
                f"{service.name} (pid {service.pid}) exited during start-up; "
                f"last lines of {service.log}:\n{_log_tail(Path(service.log))}"
            )
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.25)
    raise ServiceError(
        f"{service.name} (pid {service.pid}) not ready after {timeout_s:.0f} s; see {service.log}"
    )


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness probe: ``GET url`` answers 200."""
    import httpx

    return lambda: httpx.get(url, timeout=2.0).status_code == 200


def stop(service: Service, timeout_s: float = 15.0) -> str:
    """End ``service``'s process group (SIGTERM, then SIGKILL); says what happened."""
    proc = service.process()
    if proc is None:
        return "had already exited"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(service.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
        outcome = "stopped"
    except psutil.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGKILL)
        with contextlib.suppress(psutil.TimeoutExpired):
            proc.wait(5)
        outcome = "killed (did not stop on SIGTERM)"
    # Children left in the group (a worker's flow-run processes) go with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(service.pid, signal.SIGKILL)
    return outcome
