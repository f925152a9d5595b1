"""A writer SIGKILLed at arbitrary moments leaves a readable dataset; a rerun completes it exactly."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import xarray as xr

from tasks.acquisition.loop import acquire_run
from tasks.acquisition.twin import DigitalTwin, DriftSchedule

N = 240
SCRIPT = textwrap.dedent(
    """
    import sys
    from tasks.acquisition.loop import acquire_run
    from tasks.acquisition.twin import DigitalTwin, DriftSchedule
    twin = DigitalTwin(seed=11, schedule=DriftSchedule.parse("dose=1e5@60~50"), shape=(48, 48))
    acquire_run(twin, sys.argv[1], int(sys.argv[2]), batch_size=3)
    """
)


def _committed(path: Path) -> int:
    try:
        return xr.open_zarr(path, consolidated=True).sizes.get("frame", 0)
    except (FileNotFoundError, KeyError, ValueError):
        return 0


def _check_prefix(path: Path, reference: xr.Dataset) -> int:
    ds = xr.open_zarr(path, consolidated=True)
    n = ds.sizes["frame"]
    assert list(ds["frame_index"].values) == list(range(n))
    assert np.array_equal(ds["frames"].values, reference["frames"][:n].values)
    assert np.array_equal(ds["truth_frame"].values, reference["truth_frame"][: ds.sizes["truth"]].values)
    return n


def test_sigkill_at_any_moment_then_resume(tmp_path):
    ref_path = tmp_path / "reference.zarr"
    twin = DigitalTwin(seed=11, schedule=DriftSchedule.parse("dose=1e5@60~50"), shape=(48, 48))
    acquire_run(twin, str(ref_path), N, batch_size=7)
    reference = xr.open_zarr(ref_path)

    path = tmp_path / "killed.zarr"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    kills = 0
    for target in (20, 90, 170):
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(path), str(N)], env=env)
        deadline = time.monotonic() + 120
        while _committed(path) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        # Kill at a moment that lands anywhere in a batch: chunks, metadata or the commit.
        time.sleep(np.random.default_rng(target).uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += proc.returncode == -signal.SIGKILL
        assert _check_prefix(path, reference) >= target
    assert kills >= 2  # the writer was really killed mid-run, not finished

    subprocess.run([sys.executable, "-c", SCRIPT, str(path), str(N)], env=env, check=True)
    assert _check_prefix(path, reference) == N
    final = xr.open_zarr(path)
    assert np.array_equal(final["truth_row"].values, reference["truth_row"].values)
    assert not list(path.rglob("*.partial"))
