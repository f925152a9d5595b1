"""The edge's Dataset handle: truth read by offset, frames seen as they are committed, and a
repair that trims only the tables the handle owns (never another writer's batch in flight)."""

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from scopeflow.atoms import Atoms
from storage.datasets import Dataset, DatasetWriter, open_dataset, read_truths
from storage.datasets.handle import open_predictions
from tasks.acquisition.twin import DigitalTwin, DriftSchedule


@pytest.fixture
def acquired(tmp_path):
    twin = DigitalTwin(seed=3, schedule=DriftSchedule(), shape=(64, 64))
    path = tmp_path / "run.zarr"
    writer = DatasetWriter.open(path, twin.state())
    writer.append([twin.acquire(i) for i in range(9)])
    return path, writer, twin


def _same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.rowcol, w.rowcol)
        np.testing.assert_array_equal(g.cls, w.cls)


def test_truth_by_offset_matches_the_whole_column_read_in_any_order(acquired):
    path, writer, twin = acquired
    data = Dataset(path)
    ds = open_dataset(path)
    for start, stop in [(0, 3), (3, 7), (7, 9), (2, 5), (5, 9), (9, 9)]:
        _same(data.truths(start, stop), read_truths(ds, start, stop))
    # Frames committed after the handle opened are seen after a refresh, with their truth.
    writer.append([twin.acquire(i) for i in range(9, 12)])
    assert data.n_frames == 9 and data.refresh() == 12
    _same(data.truths(9, 12), read_truths(open_dataset(path), 9, 12))
    np.testing.assert_array_equal(data.frames(10, 12), open_dataset(path)["frames"][10:12].values)
    assert len(data.frames(0, 100)) == 12 and data.frames(12, 12).shape[0] == 0  # committed only


def _frames_on_disk(path):
    # The array's own metadata (what a writer has written), not the commit point.
    return zarr.open_array(store=LocalStore(path), path="frames", mode="r").shape[0]


def test_opening_prediction_sets_leaves_another_writers_batch_in_flight(acquired):
    path, writer, twin = acquired
    batch = [twin.acquire(i) for i in range(9, 11)]
    # The acquirer has written its next frames but not committed them yet.
    writer.frames.append({"frames": np.stack([f.image for f in batch]).astype(np.float32)})
    assert _frames_on_disk(path) == 11 and open_dataset(path).sizes["frame"] == 9
    open_predictions(path, "v0001-test")
    data = Dataset(path)
    data.predictions("other")
    _ = data.decision_writer
    assert _frames_on_disk(path) == 11, "a repair trimmed frames another writer was writing"


def test_a_batch_never_committed_is_trimmed_from_the_handles_own_tables(acquired):
    path, _, _ = acquired
    data = Dataset(path)
    writer = data.predictions("v0001-test")
    data.commit()
    writer.append([0, 1], [Atoms.empty(), Atoms.empty()])  # committed
    writer.append([2, 3], [Atoms.empty(), Atoms.empty()], commit_now=False)  # a killed batch
    again = Dataset(path).predictions("v0001-test")
    assert again.done().tolist() == [0, 1]
