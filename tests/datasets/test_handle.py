"""The edge's Dataset handle: truth read by offset, frames seen as they are committed, and a
repair that trims only the tables the handle owns (never another writer's batch in flight)."""

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from scopeflow.atoms import Atoms
from storage.datasets import Dataset, DatasetWriter, open_dataset, read_truths
from storage.datasets.decisions import read_monitor_state
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


def _state(frames: int, history: np.ndarray) -> tuple[dict, dict]:
    attrs = {"frames_seen": frames, "calibration": {"k": 1.5}}
    arrays = {
        "history_image": history,
        "history_ring_k": np.linspace(0.1, 2.0, 5),
        "recent_features": np.array([[1.0, np.nan], [np.inf, -2.5]]),
    }
    return attrs, arrays


def _assert_state(got, want) -> None:
    assert got is not None
    assert got[0] == want[0]
    assert got[1].keys() == want[1].keys()
    for name, value in want[1].items():
        np.testing.assert_array_equal(got[1][name], value)
        assert got[1][name].dtype == value.dtype


def test_the_monitor_state_grows_and_is_replaced_and_readers_see_committed_states_only(acquired):
    path, _, _ = acquired
    rng = np.random.default_rng(0)
    history = rng.normal(size=(3, 7))
    data = Dataset(path)
    states = []
    # Grown by rows (appended), then re-referenced (a new generation), then grown again.
    for step, rows in enumerate([history, np.vstack([history, history[:2] + 1]), history[:1] * 3]):
        states.append(_state(4 * (step + 1), rows))
        if step == 2:
            states[-1][1]["carried_profile"] = np.arange(4.0)  # an array first seen now
        with data.batch():
            data.write_monitor_state(*states[-1])
            # Written, not committed: every reader still reads the previous state whole.
            before = read_monitor_state(path)
            if step:
                _assert_state(before, states[-2])
            else:
                assert before is None
        _assert_state(read_monitor_state(path), states[-1])
        _assert_state(Dataset(path).monitor_state(), states[-1])
    # A batch that fails leaves the committed state as it was, its rows trimmed.

    def failing_batch() -> None:
        with data.batch():
            data.write_monitor_state(*_state(16, np.vstack([history[:1] * 3, history])))
            raise RuntimeError("the edge failed mid-batch")

    with pytest.raises(RuntimeError):
        failing_batch()
    _assert_state(read_monitor_state(path), states[-1])
    again = Dataset(path)
    with again.batch():
        again.write_monitor_state(*states[0])
    _assert_state(read_monitor_state(path), states[0])
    # Generations no committed state names are removed (one before the current is kept).
    assert len(list((path / "drift_monitor").glob("g*"))) <= 2
    assert zarr.open_group(store=LocalStore(path, read_only=True), mode="r", use_consolidated=True)


def test_one_writers_repair_never_publishes_another_killed_writers_batch(acquired):
    # A pipelined run killed by SIGKILL leaves both its writers' batches half-written: the
    # frames and the edge's atoms. On resume the acquirer repairs first: its commit must not
    # publish the edge's rows (its columns at different lengths), which the edge's own repair
    # then could no longer tell from a commit.
    path, writer, twin = acquired
    data = Dataset(path)
    predictions = data.predictions("v0001-test")
    predictions.append([0, 1], [Atoms.empty(), Atoms.empty()])
    predictions.frames.append({"predicted_frame": np.array([2, 3]), "atom_count": np.array([0, 0])})
    batch = [twin.acquire(i) for i in range(9, 11)]
    writer.frames.append({"frames": np.stack([f.image for f in batch]).astype(np.float32)})

    DatasetWriter.open(path, twin.state())  # the acquirer resumes: trims its own frames
    assert _frames_on_disk(path) == 9
    resumed = Dataset(path).predictions("v0001-test")
    assert resumed.done().tolist() == [0, 1]
    resumed.append([2, 3], [Atoms.empty(), Atoms.empty()])  # lengths agree again
    assert resumed.done().tolist() == [0, 1, 2, 3]
