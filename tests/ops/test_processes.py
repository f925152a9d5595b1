"""Process handling of ``scopeflow up/down``: by pid, start time checked, clear errors."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from flows.ops import OpsSettings, State, down, up
from flows.processes import Service, check_port, spawn, stop, wait_until
from scopeflow.errors import ServiceError


def test_a_taken_port_names_its_owner() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ServiceError, match=rf"port {port} .*taken by pid \d+.*--store-port"):
            check_port("127.0.0.1", port, "store server", "--store-port")


def test_a_process_dying_at_start_up_shows_its_log(tmp_path: Path) -> None:
    service = spawn(
        "flaky",
        [sys.executable, "-c", "print('no database here'); raise SystemExit(3)"],
        {},
        tmp_path / "f.log",
    )
    with pytest.raises(ServiceError, match=r"(?s)flaky \(pid \d+\) exited during start-up.*no database here"):
        wait_until(service, lambda: False, timeout_s=30)


def test_down_stops_exactly_the_recorded_processes(tmp_path: Path) -> None:
    settings = OpsSettings(home=tmp_path)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    ours = spawn("sleeper", sleeper, {}, tmp_path / "s.log")
    other = spawn("bystander", sleeper, {}, tmp_path / "b.log")
    # A recorded pid whose start time differs is another process now: never signalled.
    recycled = Service("recycled", other.pid, other.create_time - 100.0, sleeper, "")
    State(str(tmp_path), "now", {}, "", [ours, recycled]).save(settings.state_file)
    with pytest.raises(ServiceError, match="already up"):
        up(settings)
    outcomes = {s.name: outcome for s, outcome in down(settings, log=lambda _: None)}
    assert outcomes == {"sleeper": "stopped", "recycled": "had already exited"}
    assert not ours.alive() and other.alive()
    assert not settings.state_file.exists()
    assert stop(other) == "stopped"
