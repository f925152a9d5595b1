"""The folder watcher with files written by numpy, tifffile and rosettasciio, and half-written ones."""

import logging
import time

import numpy as np
import pytest
import tifffile
import xarray as xr

from scopeflow.errors import InputError, WaitTimeoutError
from tasks.acquisition.loop import acquire_run
from tasks.acquisition.watcher import FolderWatcher
from tests.inference.test_readers import write_hspy

SETTLE = 0.2


def _image(seed, shape=(48, 64)):
    return np.random.default_rng(seed).poisson(20, size=shape).astype(np.float32)


def test_each_file_ingested_once_in_order(tmp_path):
    (tmp_path / "a.npy").write_bytes(b"")
    np.save(tmp_path / "a.npy", _image(1))
    time.sleep(0.02)
    tifffile.imwrite(tmp_path / "b.tif", _image(2))
    time.sleep(0.02)
    write_hspy(tmp_path / "c.hspy", _image(3), 0.015)  # nm, as HyperSpy stores it
    (tmp_path / "notes.txt").write_text("not an image")
    watcher = FolderWatcher(tmp_path, pixel_size=0.1, settle=SETTLE, timeout=5)
    frames = [watcher.acquire(i) for i in range(3)]
    assert [f.source for f in frames] == ["a.npy", "b.tif", "c.hspy"]
    for f, seed in zip(frames, (1, 2, 3), strict=True):
        assert np.array_equal(f.image, _image(seed))
    assert frames[2].pixel_size == pytest.approx(0.15)  # from the file's own axes
    assert frames[0].pixel_size == pytest.approx(0.1)  # from the flag
    watcher.timeout = 0.5
    with pytest.raises(TimeoutError, match="no new complete image file"):
        watcher.acquire(3)


def test_half_written_file_is_not_read_until_complete(tmp_path, caplog):
    data = _image(4, (64, 64))
    np.save(tmp_path / "full.npy", data)
    payload = (tmp_path / "full.npy").read_bytes()
    (tmp_path / "full.npy").unlink()
    target = tmp_path / "growing.npy"
    target.write_bytes(payload[: len(payload) // 3])  # the vendor software is still writing
    watcher = FolderWatcher(tmp_path, settle=SETTLE, timeout=1.0, pixel_size=0.1)
    with caplog.at_level(logging.WARNING), pytest.raises(TimeoutError):
        watcher.acquire(0)
    assert "growing.npy" in caplog.text  # skipped with a warning, not a crash
    target.write_bytes(payload)  # the write completes
    watcher.timeout = 10
    frame = watcher.acquire(0)
    assert frame.source == "growing.npy"
    assert np.array_equal(frame.image, data)


def test_unreadable_file_never_stops_the_others(tmp_path, caplog):
    (tmp_path / "broken.tif").write_bytes(b"\x00garbage" * 50)
    np.save(tmp_path / "good.npy", _image(5))
    watcher = FolderWatcher(tmp_path, settle=SETTLE, timeout=5, pixel_size=0.1)
    with caplog.at_level(logging.WARNING):
        frame = watcher.acquire(0)
    assert frame.source == "good.npy"
    assert "broken.tif" in caplog.text


def test_folder_run_resumes_without_reingesting(tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for i in range(3):
        np.save(incoming / f"f{i}.npy", _image(10 + i))
        time.sleep(0.02)
    dataset = tmp_path / "run.zarr"
    assert (
        acquire_run(FolderWatcher(incoming, settle=SETTLE, timeout=5, pixel_size=0.1), str(dataset), 3) == 3
    )
    np.save(incoming / "f3.npy", _image(13))
    assert (
        acquire_run(FolderWatcher(incoming, settle=SETTLE, timeout=5, pixel_size=0.1), str(dataset), 4) == 4
    )
    ds = xr.open_zarr(dataset)
    assert [str(s) for s in ds["source"].values] == ["f0.npy", "f1.npy", "f2.npy", "f3.npy"]
    assert np.array_equal(ds["frames"][3].values, _image(13))


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        FolderWatcher(tmp_path / "nope")


def test_the_watcher_says_what_it_waits_for(tmp_path):
    (tmp_path / "growing.npy").write_bytes(b"\x93NUMPY")  # still being written: never settles
    said: list[str] = []
    watcher = FolderWatcher(tmp_path, settle=5.0, timeout=1.0, report=said.append, report_every=0.2)
    with pytest.raises(WaitTimeoutError, match="frame 0"):
        watcher.acquire(0)
    assert said, "the watcher waited silently"
    assert all("waiting for frame 0" in line and str(tmp_path) in line for line in said)
    assert "growing.npy" in said[-1]  # what it sees but cannot take yet
