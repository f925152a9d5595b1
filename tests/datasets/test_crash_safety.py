"""A writer SIGKILLed at arbitrary moments leaves a readable dataset; a rerun completes it exactly."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
import xarray as xr

from storage.datasets import DatasetWriter
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


# New datasets one after another, each created and given its first batches (its columns'
# directories, chunks and ``zarr.json`` are written then), until killed.
CREATING = textwrap.dedent(
    """
    import itertools, sys
    from pathlib import Path
    from storage.datasets import DatasetWriter
    from tasks.acquisition.twin import DigitalTwin, DriftSchedule
    twin = DigitalTwin(seed=11, schedule=DriftSchedule.parse("defocus=40@2"), shape=(32, 32))
    frames = [twin.acquire(i) for i in range(6)]
    for n in itertools.count():
        writer = DatasetWriter.open(Path(sys.argv[1]) / f"{n:05d}.zarr", twin.state())
        writer.append(frames[:3])
        writer.append(frames[3:])
    """
)


def test_a_dataset_killed_while_creating_its_columns_reopens_and_completes(tmp_path):
    twin = DigitalTwin(seed=11, schedule=DriftSchedule.parse("defocus=40@2"), shape=(32, 32))
    frames = [twin.acquire(i) for i in range(6)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for attempt in range(2):
        runs = tmp_path / f"runs{attempt}"
        runs.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", CREATING, str(runs)], env=env)
        deadline = time.monotonic() + 60
        while len(list(runs.glob("*.zarr"))) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        # The first kill where a new column has its directory but not yet its zarr.json (the
        # writer paused to look, up to 50 times), the second anywhere in a dataset's creation or
        # its first batches (each takes a few ms).
        rng = np.random.default_rng(attempt)
        for _ in range(50 if attempt == 0 else 1):
            time.sleep(rng.uniform(0, 0.03))
            proc.send_signal(signal.SIGSTOP)
            os.waitpid(proc.pid, os.WUNTRACED)  # stopped: what is seen is what a kill leaves
            last = max(runs.glob("*.zarr"))
            if attempt or any(p.is_dir() and not (p / "zarr.json").exists() for p in last.iterdir()):
                break
            proc.send_signal(signal.SIGCONT)
        else:
            raise AssertionError("never caught a column without its zarr.json")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        last = sorted(runs.glob("*.zarr"))[-1]  # the one being written when killed
        writer = DatasetWriter.open(last, twin.state())  # repairs it (warnings are errors here)
        assert writer.n_frames in (0, 3, 6)
        if writer.n_frames < 6:
            writer.append(frames[writer.n_frames :])
        ds = xr.open_zarr(last, consolidated=True)
        assert list(ds["frame_index"].values) == list(range(6))
        assert np.array_equal(ds["frames"].values, np.stack([f.image for f in frames]))
        assert list(ds["conditions"].sel(condition="defocus").values) == [0.0] * 2 + [40.0] * 4
        assert np.array_equal(
            ds["truth_frame"].values, np.repeat(np.arange(6), [len(f.truth.cls) for f in frames])
        )
        # Another Zarr v3 implementation reads the frames the same.
        store = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(last / "frames")}}
        assert np.array_equal(
            ts.open(store, open=True, read=True).result().read().result(), ds["frames"].values
        )


def test_a_column_directory_left_without_metadata_is_removed_on_reopening(tmp_path):
    """What a writer killed between a new column's chunks and its ``zarr.json`` leaves."""
    twin = DigitalTwin(seed=11, schedule=DriftSchedule.parse("defocus=40@2"), shape=(32, 32))
    path = tmp_path / "run.zarr"
    DatasetWriter.open(path, twin.state())
    (path / "frames").mkdir()
    (path / "frames" / "c.0.0.0").write_bytes(b"\xff" * 100_000)  # a stale shard
    (path / "time").mkdir()
    writer = DatasetWriter.open(path, twin.state())
    assert not (path / "frames").exists() and not (path / "time").exists()
    frames = [twin.acquire(i) for i in range(3)]
    writer.append(frames)
    ds = xr.open_zarr(path)
    assert np.array_equal(ds["frames"].values, np.stack([f.image for f in frames]))
    assert (path / "frames" / "c.0.0.0").stat().st_size < 100_000


# zarr warns of a directory it does not recognise, and skips it.
@pytest.mark.filterwarnings("ignore:.*not recognized as a component")
def test_a_users_own_directory_in_a_dataset_survives_its_repair(tmp_path):
    """Only what a killed creation leaves (chunk files, no ``zarr.json``) is removed: a directory
    of the user's own inside the dataset, files or subdirectories, is not ours to delete."""
    twin = DigitalTwin(seed=11, schedule=DriftSchedule.parse("defocus=40@2"), shape=(32, 32))
    path = tmp_path / "run.zarr"
    DatasetWriter.open(path, twin.state())
    (path / "notes").mkdir()
    (path / "notes" / "c.txt").write_text("the sample was tilted")  # a user's file named like a chunk
    (path / "notes" / "figures").mkdir()
    writer = DatasetWriter.open(path, twin.state())
    writer.append([twin.acquire(i) for i in range(3)])
    assert (path / "notes" / "c.txt").read_text() == "the sample was tilted"
    assert (path / "notes" / "figures").is_dir()
