import json
import threading
import time

import numpy as np
import pytest
import xarray as xr
import zarr

from scopeflow.errors import InputError, ShapeMismatchError, StorageError
from scopeflow.frame import Frame
from storage.datasets import DatasetWriter, open_dataset, read_truth
from storage.datasets.chunk_files import SPARE
from tasks.acquisition.loop import acquire_run
from tasks.acquisition.twin import DigitalTwin, DriftSchedule


@pytest.fixture
def twin():
    return DigitalTwin(seed=7, schedule=DriftSchedule.parse("defocus=40@4"), shape=(64, 64))


def test_round_trip_with_plain_xarray(tmp_path, twin):
    path = tmp_path / "run.zarr"
    assert acquire_run(twin, str(path), 10, batch_size=4) == 10
    ds = xr.open_zarr(path)  # plain xarray, no scopeflow reader
    assert ds["frames"].dims == ("frame", "y", "x") and ds.sizes["frame"] == 10
    assert np.array_equal(ds["frames"][6].values, twin.acquire(6).image)
    assert ds["time"].dtype.kind == "M" and (np.diff(ds["time"].values) > np.timedelta64(0)).all()
    assert list(ds["conditions"].sel(condition="defocus").values) == [0.0] * 4 + [40.0] * 6
    assert ds["pixel_size"].values[0] == pytest.approx(0.12)
    assert str(ds["lattice"].values[0]) == "graphene"
    truth = read_truth(open_dataset(path), 6)
    assert np.allclose(truth.rowcol, twin.acquire(6).truth.rowcol)


def test_conditions_numbers_text_and_numbers_first_seen_later(tmp_path, twin):
    def frame(i, **conditions):
        return Frame(i, twin.acquire(i).image, 0.12, np.datetime64(i, "s"), conditions, None, f"f{i}")

    writer = DatasetWriter.open(tmp_path / "run.zarr")
    writer.append([frame(0, dose=1e5, mode="a"), frame(1, dose=2e5, mode=3)])  # mode: text in one frame
    writer.append([frame(2, dose=3e5, tilt=1.5), frame(3, tilt=-2)])  # tilt: a number seen later
    ds = xr.open_zarr(tmp_path / "run.zarr")
    assert list(ds["condition"].values) == ["dose"]
    assert np.array_equal(ds["conditions"].values[:, 0], [1e5, 2e5, 3e5, np.nan], equal_nan=True)
    assert [str(v) for v in ds["mode"].values] == ["a", "3", "", ""]
    assert [str(v) for v in ds["metadata"].values[2:]] == ['{"tilt": 1.5}', '{"tilt": -2}']


def test_rerun_resumes_without_duplicates(tmp_path, twin):
    path = str(tmp_path / "run.zarr")
    acquire_run(twin, path, 5, batch_size=2)
    acquire_run(twin, path, 9, batch_size=2)
    ds = open_dataset(path)
    assert list(ds["frame_index"].values) == list(range(9))


def test_resume_with_other_instrument_settings_is_refused(tmp_path, twin):
    path = str(tmp_path / "run.zarr")
    acquire_run(twin, path, 2)
    with pytest.raises(InputError, match="seed"):
        acquire_run(DigitalTwin(seed=8, schedule=twin.schedule, shape=(64, 64)), path, 4)


def test_wrong_shape_names_both_shapes(tmp_path, twin):
    writer = DatasetWriter.open(tmp_path / "run.zarr", twin.state())
    writer.append([twin.acquire(0)])
    bad = Frame(
        index=1, image=np.zeros((32, 48), np.float32), pixel_size=0.1, time=np.datetime64("2026-01-01")
    )
    with pytest.raises(ShapeMismatchError, match=r"\(32, 48\).*\(64, 64\)"):
        writer.append([bad])
    assert writer.n_frames == 1


def test_complex_or_3d_frames_are_refused(tmp_path, twin):
    writer = DatasetWriter.open(tmp_path / "run.zarr", twin.state())
    cube = Frame(index=0, image=np.zeros((2, 64, 64)), pixel_size=0.1, time=np.datetime64("2026-01-01"))
    with pytest.raises(ShapeMismatchError, match="2-D"):
        writer.append([cube])


def test_write_failure_is_clear_and_keeps_committed_frames(tmp_path, twin):
    path = tmp_path / "run.zarr"
    writer = DatasetWriter.open(path, twin.state())
    writer.append([twin.acquire(i) for i in range(3)])
    # The disk refuses the frames' new shape: a directory sits where the file it is written
    # into must go (after the frame's bytes went into its shard).
    blocker = path / "frames" / SPARE
    blocker.unlink(missing_ok=True)
    blocker.mkdir()
    with pytest.raises(StorageError, match="frames committed before this batch are intact"):
        writer.append([twin.acquire(3)])
    blocker.rmdir()
    ds = open_dataset(path)
    assert ds.sizes["frame"] == 3
    assert np.array_equal(ds["frames"][2].values, twin.acquire(2).image)
    assert DatasetWriter.open(path, twin.state()).n_frames == 3


def test_not_a_dataset_directory_is_refused(tmp_path, twin):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="not a scopeflow dataset"):
        DatasetWriter.open(tmp_path / "x", twin.state())


def test_readers_during_appends_see_whole_committed_batches(tmp_path):
    """While a writer appends, every open sees a prefix of whole batches: all columns agree."""
    twin = DigitalTwin(seed=3, shape=(32, 32))
    frames = [twin.acquire(i) for i in range(300)]
    path = tmp_path / "run.zarr"
    writer = DatasetWriter.open(path, twin.state())
    writer.append(frames[:5])
    done = threading.Event()

    def write() -> None:
        try:
            for b in range(5, 300, 5):
                writer.append(frames[b : b + 5])
                time.sleep(0.005)  # frames arrive over time; the reader gets the GIL meanwhile
        finally:
            done.set()

    thread = threading.Thread(target=write)
    thread.start()
    seen = set()
    while not done.is_set() or not seen:
        ds = xr.open_zarr(path)
        n = ds.sizes["frame"]
        seen.add(n)
        assert n % 5 == 0  # whole batches only
        assert list(ds["frame_index"].values) == list(range(n))
        assert ds["conditions"].shape[0] == ds["time"].shape[0] == ds["source"].shape[0] == n
        last = ds["frames"][n - 1].values
        assert np.array_equal(last, frames[n - 1].image)
        assert ds["truth_frame"].values.max() == n - 1
    thread.join()
    assert max(seen) <= 300 and len(seen) > 1  # it read while the writer wrote


def test_detector_counts_are_stored_compressed_and_noisy_frames_raw(tmp_path, twin):
    # The codec is the frames' own: exact integer counts shrink several-fold for less than
    # their write costs; the twin's counts with read noise barely shrink and are written raw.
    rng = np.random.default_rng(0)
    now = np.datetime64("2026-11-30T12:00:00", "ns")
    counts = [
        Frame(i, rng.poisson(2.0, (64, 64)).astype(np.float32), 0.1, now + np.timedelta64(i, "s"))
        for i in range(4)
    ]
    for name, batch in (("counts", counts), ("twin", [twin.acquire(i) for i in range(4)])):
        path = tmp_path / f"{name}.zarr"
        DatasetWriter.open(path, {}).append(batch)
        meta = (path / "frames" / "zarr.json").read_text()
        assert ('"blosc"' in meta) == (name == "counts")
        stored = open_dataset(path)["frames"].values
        assert np.array_equal(stored, np.stack([f.image for f in batch]))
    on_disk = sum(p.stat().st_size for p in (tmp_path / "counts.zarr" / "frames").rglob("c*"))
    assert on_disk < 4 * 64 * 64 * 4 / 2


def test_a_text_condition_named_like_a_group_is_refused_and_the_group_kept(tmp_path, twin):
    path = tmp_path / "run.zarr"
    writer = DatasetWriter.open(path, twin.state())
    writer.append([twin.acquire(0)])
    zarr.open_group(path, mode="a", use_consolidated=False).create_group("drift")  # the edge's
    frame = twin.acquire(1)
    clash = Frame(1, frame.image, 0.12, frame.time, {**frame.conditions, "drift": "high"}, None, "f1")
    with pytest.raises(InputError, match="a node of that name exists"):
        writer.append([clash])
    assert json.loads((path / "drift" / "zarr.json").read_bytes())["node_type"] == "group"
