"""Embedded defaults for Prefect, applied before Prefect is imported, and the temporary API.

With no ``PREFECT_API_URL`` the flows run against a temporary Prefect API server with its
database under the scopeflow home; a user's own settings always win.

The temporary server is ours, not Prefect's ephemeral one: Prefect's outlives a parent
killed with SIGKILL (a uvicorn process of ~200 MB, parent pid 1, one per killed run). Ours
(``python -m flows.prefect_setup``) ends itself when its parent dies: the kernel sends it
SIGTERM (``PR_SET_PDEATHSIG``, Linux) and a watchdog thread checks the parent pid every
second (everywhere else, and for a parent that died before the signal was armed).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from scopeflow.config import home
from scopeflow.errors import ScopeflowError, ServiceError

DEFAULTS = {
    # Telemetry would hold the SQLite database while flows write to it.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}
#: What Prefect's own ephemeral server runs with: no UI, only the services an ephemeral server
#: needs (automation triggers included), migrations once (pinned: prefect<3.9; tested by
#: tests/flows/test_cli_errors.py, which runs flows against it).
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
PR_SET_PDEATHSIG = 1
_server: subprocess.Popen[bytes] | None = None


def configure_embedded() -> None:
    """Set Prefect's environment defaults (never overriding the user's)."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    if "PREFECT_API_URL" not in os.environ and "PREFECT_HOME" not in os.environ:
        prefect_home = home() / "prefect"
        # Prefect creates only the last level of its home; the server then fails to start.
        prefect_home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(prefect_home)


class _ExpectedErrors(logging.Filter):
    """Keeps the traceback of an error scopeflow raised on purpose off the console: the CLI
    prints it as one line (the run's log in the API keeps it whole)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ScopeflowError):
            return False
        # The closing "Finished in state Failed('… InputError: …')" repeats the same error.
        message = record.getMessage()
        return not (message.startswith("Finished in state Failed") and _names_our_error(message))


def _names_our_error(message: str) -> bool:
    from scopeflow import errors

    names = [n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, ScopeflowError)]
    return any(f"{name}:" in message for name in names)


def prepare_prefect(log: Callable[[str], None] | None = None) -> str:
    """Make this process ready to run flows: the API (``ensure_api``), then Prefect imported
    with its console handlers quiet about errors the CLI reports itself. Returns the API URL."""
    url = ensure_api(log)
    import prefect.main  # noqa: F401  (what `from prefect import flow` imports: it configures logging)

    quiet = _ExpectedErrors()
    for handler in logging.getLogger().handlers + logging.getLogger("prefect").handlers:
        if not any(isinstance(f, _ExpectedErrors) for f in handler.filters):
            handler.addFilter(quiet)
    return url


def ensure_api(log: Callable[[str], None] | None = None) -> str:
    """The Prefect API the flows of this process report to: ``$PREFECT_API_URL``, else a
    temporary server started now that dies with this process. Call it after the command's
    arguments are validated (a mistake must not wait for a server) and before Prefect is
    imported (Prefect reads its settings from the environment once)."""
    global _server
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        return configured
    if "prefect.settings" in sys.modules:  # already configured in this process (a test harness)
        from prefect.settings import get_current_settings

        in_process = get_current_settings().api.url
        if in_process:
            return str(in_process)
    from storage.federation.embedded import free_port

    configure_embedded()
    port = free_port()
    prefect_home = Path(os.environ.get("PREFECT_HOME", home() / "prefect"))
    prefect_home.mkdir(parents=True, exist_ok=True)
    log_path = prefect_home / "temporary-server.log"
    with open(log_path, "ab") as out:
        _server = subprocess.Popen(
            [sys.executable, "-m", "flows.prefect_setup", "--parent", str(os.getpid()), "--port", str(port)],
            env={**os.environ, **SERVER_ENV},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own session: a SIGTERM or Ctrl-C sent to the command's process group reaches
            # the command, which then ends its flow run while this server still answers.
            start_new_session=True,
        )
    atexit.register(stop_api)
    url = f"http://127.0.0.1:{port}/api"
    timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))
    _wait_healthy(url, timeout, log_path)
    os.environ["PREFECT_API_URL"] = url
    if log is not None:
        log(f"Prefect API: temporary server at {url} (database in {prefect_home})")
    return url


def _wait_healthy(url: str, timeout_s: float, log_path: Path) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _server is None or _server.poll() is not None:
            tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
            raise ServiceError(f"the temporary Prefect server exited during start-up; {log_path}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        time.sleep(0.2)
    stop_api()
    raise ServiceError(
        f"the temporary Prefect server did not answer within {timeout_s:.0f} s; see {log_path}"
    )


def stop_api() -> None:
    """Stop the temporary server this process started (SIGTERM, then SIGKILL)."""
    global _server
    proc, _server = _server, None
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# ---------------------------------------------------------------------------------- the server side
def _die_with(parent: int) -> None:
    """End this process when ``parent`` ends, however it ends."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10.0)  # uvicorn's graceful shutdown; past that, no waiting on anything
        os._exit(1)

    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _serve(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A temporary Prefect API server bound to its parent.")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    _die_with(args.parent)
    import uvicorn

    uvicorn.run(
        "prefect.server.api.server:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_level="error",
        lifespan="on",
    )


if __name__ == "__main__":
    _serve()
