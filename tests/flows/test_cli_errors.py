"""The command line as a user meets it: bad input is one line and exit 2, before any server
starts; a failed or killed acquisition leaves neither an empty dataset nor a server behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from storage.datasets import DatasetWriter
from storage.federation.embedded import free_port
from tasks.acquisition import make_instrument
from tasks.acquisition.loop import acquire_run
from tasks.acquisition.twin import DigitalTwin

ROOT = Path(__file__).resolve().parents[2]
SERVER_LINE = "Prefect API: temporary server"


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "SCOPEFLOW_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_HOME", None)
    return env


def scopeflow(home: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows", *args],
        env=_env(home),
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error line, after checking there is exactly one and no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr and "╭" not in result.stderr, result.stderr
    return errors[0]


def _other_dataset(path: Path) -> Path:
    """A dataset acquired with a seed the commands below do not use."""
    twin = DigitalTwin(seed=7, shape=(32, 32))
    DatasetWriter.open(path, twin.state()).append([twin.acquire(0)])
    return path


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["acquire", "-n", "4", "--drift", "dose=-5@10"], "'dose' must be > 0"),
        (["acquire", "-n", "4", "--drift", "dose=2e5@10~"], "ramp length"),
        (["acquire", "-n", "4", "--drift", "dose@10"], "key=value@start"),
        (["acquire", "-n", "4", "--drift", "contamination=2@3"], "'contamination' must be"),
        (["acquire", "-n", "0"], "--frames"),
        (["acquire", "-n", "4", "--instrument", "folder", "--watch", "nowhere"], "nowhere"),
        (["acquire", "-n", "4", "--seed", "1", "--dataset", "{other}"], "different instrument settings"),
        (["run", "--drift", "defocus=far@3"], "needs a number"),
        (["edge", "--dataset", "{missing}"], "missing.zarr"),
        (["reprocess", "{missing}"], "missing.zarr"),
        (["reprocess", "{other}", "--workers", "0"], "--workers"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2_before_any_server(
    tmp_path: Path, args: list[str], says: str
) -> None:
    home = tmp_path / "home"
    fresh = tmp_path / "new.zarr"
    other = _other_dataset(tmp_path / "other.zarr")
    names = {"other": str(other), "missing": str(tmp_path / "missing.zarr")}
    args = [a.format(**names) for a in args]
    if args[0] == "acquire" and "--dataset" not in args:
        args += ["--dataset", str(fresh)]
    result = scopeflow(home, *args)
    assert says in _one_line_error(result)
    assert SERVER_LINE not in result.stderr  # refused before the server started
    assert not fresh.exists(), "a refused acquisition must create nothing"


def test_store_errors_exit_2(tmp_path: Path) -> None:
    result = scopeflow(tmp_path / "home", "store", "get", "d/1", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2, result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) <= 2, result.stderr


def test_a_failed_acquisition_leaves_no_empty_dataset(tmp_path: Path) -> None:
    """No frame arrives: the run fails, and the dataset it had created is gone, so the
    corrected command (another folder) is not refused as 'acquired with other settings'."""
    empty = tmp_path / "empty"
    empty.mkdir()
    dataset = tmp_path / "run.zarr"
    watcher = make_instrument("folder", folder=empty, pixel_size=0.1, timeout=0.2)
    with pytest.raises(TimeoutError):
        acquire_run(watcher, str(dataset), 2)
    assert not dataset.exists()
    twin = make_instrument("twin", seed=1, shape=(32, 32))
    assert acquire_run(twin, str(dataset), 2) == 2


def test_a_frame_of_another_shape_is_one_line_and_the_server_goes(tmp_path: Path) -> None:
    """A frame of another shape in the watched folder (it arrives once the server runs): one
    error line, exit 2, the committed frame kept, no temporary server left behind."""
    watched = tmp_path / "watched"
    watched.mkdir()
    np.save(watched / "a.npy", np.random.default_rng(0).random((64, 64), dtype=np.float32))
    later = time.time() + 5
    np.save(watched / "b.npy", np.random.default_rng(1).random((32, 48), dtype=np.float32))
    os.utime(watched / "b.npy", (later, later))  # ingested second (files go in mtime order)
    dataset = tmp_path / "run.zarr"
    before = {p.pid for p in psutil.process_iter()}
    result = scopeflow(
        tmp_path / "home",
        *("acquire", "-n", "2", "--batch-size", "1", "--instrument", "folder"),
        *("--watch", str(watched), "--pixel-size", "0.1", "--dataset", str(dataset)),
    )
    assert "(32, 48)" in _one_line_error(result)
    assert SERVER_LINE in result.stderr
    assert DatasetWriter.open(dataset).n_frames == 1
    assert not [p for p in _temporary_servers() if p.pid not in before]


def _temporary_servers() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "flows.prefect_setup" in cmd and proc.status() != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def test_a_killed_acquire_leaves_no_temporary_server(tmp_path: Path) -> None:
    """SIGKILL gives the CLI no chance to clean up: its server must end by itself."""
    dataset = tmp_path / "run.zarr"
    cli = subprocess.Popen(
        [sys.executable, "-m", "flows", "acquire", "-n", "100000", "--dataset", str(dataset)],
        env=_env(tmp_path / "home"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert cli.stderr is not None
        for line in cli.stderr:  # the line comes once the server answers
            if SERVER_LINE in line:
                break
        else:
            pytest.fail(f"the CLI exited ({cli.wait()}) before starting its server")
        servers = psutil.Process(cli.pid).children(recursive=True)
        assert servers, "the temporary server should be a child of the CLI"
        cli.send_signal(signal.SIGKILL)
        cli.wait(10)
        _gone, alive = psutil.wait_procs(servers, timeout=60)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        if cli.poll() is None:
            cli.kill()
        for proc in psutil.Process().children(recursive=True):
            if proc.pid != cli.pid and "flows.prefect_setup" in " ".join(proc.cmdline()):
                proc.kill()


def test_sigterm_stops_a_waiting_watcher_cleanly(tmp_path: Path) -> None:
    """The watcher waits for a frame that never comes; SIGTERM ends the command at once, in one
    line, with the committed frame kept and no server left (it took 215 s, with tracebacks)."""
    watched = tmp_path / "watched"
    watched.mkdir()
    np.save(watched / "a.npy", np.random.default_rng(0).random((64, 64), dtype=np.float32))
    dataset = tmp_path / "run.zarr"
    cli = subprocess.Popen(
        [
            *(sys.executable, "-m", "flows", "acquire", "-n", "3", "--batch-size", "1"),
            *("--instrument", "folder", "--watch", str(watched), "--pixel-size", "0.1"),
            *("--timeout", "600", "--dataset", str(dataset)),
        ],
        env=_env(tmp_path / "home"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert cli.stderr is not None
        seen = []
        for line in cli.stderr:
            seen.append(line)
            if "waiting for frame 1" in line:  # said within 10 s of waiting
                break
        else:
            pytest.fail("".join(seen))
        servers = psutil.Process(cli.pid).children(recursive=True)
        cli.send_signal(signal.SIGTERM)
        rest = cli.stderr.read()
        assert cli.wait(60) == 128 + signal.SIGTERM
    finally:
        if cli.poll() is None:
            cli.kill()
    assert "stopped by SIGTERM" in rest
    assert "Traceback" not in rest and "ConnectError" not in rest, rest
    assert DatasetWriter.open(dataset).n_frames == 1
    _gone, alive = psutil.wait_procs(servers, timeout=30)
    assert not alive
