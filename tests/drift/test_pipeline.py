"""Acquisition overlapped with the edge loop (``run_pipelined``): the decisions of the plain
loop, a producer's failure raised after what it committed was decided, no thread left behind,
and a pipelined loop SIGKILLed at any moment resumes to the decisions of an unbroken run."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from scopeflow.errors import InputError
from scopeflow.settings import EdgeSettings
from storage.datasets import DatasetWriter
from storage.datasets.decisions import read_decisions, read_monitor_state
from storage.models import ModelRegistry
from tasks.acquisition.loop import acquire_batch, batches
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.drift.edge_loop import EdgeLoop, run_adaptive_edge
from tasks.drift.pipeline import run_pipelined
from tasks.inference.registry import load_ensemble

N = 48
BATCH = 4
# A short reference (16 frames: calibrations at 16 and 32) puts the background calibrations
# and a dose drop inside a few seconds of frames.
SETTINGS = EdgeSettings(batch_size=BATCH, reference_frames=16)


def _twin() -> DigitalTwin:
    return DigitalTwin(seed=3, schedule=DriftSchedule.parse("dose=1e5@36"), shape=(128, 128))


def _loop(path: str | Path, registry: str | Path) -> EdgeLoop:
    reg = ModelRegistry(registry)
    ensemble = load_ensemble("production", reg)
    # One exact path in every process (no trial): runs compare to the bit.
    ensemble.execution = "fused"
    return EdgeLoop(path, ensemble, registry=reg, settings=SETTINGS)


def pipelined_run(path: str | Path, frames: int, registry: str | Path) -> None:
    """The loop as ``flows/loop.py`` runs it, without Prefect (resumes what is committed)."""
    twin = _twin()
    writer = DatasetWriter.open(path, twin.state())
    loop = _loop(path, registry)
    run_pipelined(
        lambda first, end: acquire_batch(twin, writer, first, end),
        batches(writer.n_frames, frames, BATCH),
        lambda end: run_adaptive_edge(path, loop=loop, stop_at=end),
        committed=lambda: writer.n_frames,
    )


def _decided(path: Path) -> int:
    try:
        ends = read_decisions(path).get("frame_end")
    except (OSError, KeyError, ValueError):
        return 0
    return 0 if ends is None or not len(ends) else int(ends.max()) + 1


def _assert_same_decisions(got: dict, expected: dict) -> None:
    assert list(got["frame_start"]) == list(expected["frame_start"])
    assert list(got["detected"]) == list(expected["detected"])
    assert list(got["action"]) == list(expected["action"])
    for name in [k for k in expected if k.startswith("score_")]:
        np.testing.assert_array_equal(got[name], expected[name])


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    """A sequential run (acquire, then edge) and its decisions: what every other run must match."""
    tmp = tmp_path_factory.mktemp("pipeline")
    path, registry = tmp / "sequential.zarr", tmp / "registry"
    twin = _twin()
    writer = DatasetWriter.open(path, twin.state())
    loop = _loop(path, registry)
    for first, end in batches(0, N, BATCH):
        writer.append([twin.acquire(i) for i in range(first, end)])
        run_adaptive_edge(path, loop=loop, stop_at=end)
    decided = read_decisions(path)
    assert decided["detected"].any()  # the dose drop is seen: decisions that matter are compared
    return registry, decided


def test_pipelined_loop_decides_as_the_sequential_one(unbroken, tmp_path):
    registry, expected = unbroken
    path = tmp_path / "pipelined.zarr"
    pipelined_run(path, N, registry)
    _assert_same_decisions(read_decisions(path), expected)
    assert not [t for t in threading.enumerate() if t.name == "acquisition-writer"]


def test_a_stop_between_a_checkpoint_and_its_calibration_resumes_the_same(unbroken, tmp_path):
    # Frames 28-31 complete the 32-frame reference: its calibration runs in the background and
    # is adopted before frame 32 is decided. A run that stops there stores that it was pending.
    registry, expected = unbroken
    path = tmp_path / "stopped.zarr"
    pipelined_run(path, 32, registry)
    attrs, _ = read_monitor_state(path)
    assert attrs["calibration_pending"] and attrs["calibrated_on"] == 16
    pipelined_run(path, N, registry)
    _assert_same_decisions(read_decisions(path), expected)


def test_a_run_killed_after_its_last_frame_was_acquired_decides_the_rest_on_resume(unbroken, tmp_path):
    # Every frame committed, the edge killed before deciding the last batches: the resumed run
    # has nothing to acquire, and must still decide them.
    registry, expected = unbroken
    path = tmp_path / "acquired.zarr"
    twin = _twin()
    DatasetWriter.open(path, twin.state()).append([twin.acquire(i) for i in range(N)])
    run_adaptive_edge(path, loop=_loop(path, registry), stop_at=N - 2 * BATCH)
    pipelined_run(path, N, registry)
    _assert_same_decisions(read_decisions(path), expected)


def test_a_failing_acquisition_is_raised_after_its_committed_batches_are_decided(tmp_path):
    consumed: list[int] = []

    def produce(first: int, end: int) -> None:
        if first == 8:
            raise InputError("the instrument stopped answering")

    with pytest.raises(InputError, match="stopped answering"):
        run_pipelined(produce, batches(0, 16, 4), consumed.append)
    assert consumed == [4, 8]
    assert not [t for t in threading.enumerate() if t.name == "acquisition-writer"]


def test_a_failing_edge_stops_the_acquisition(tmp_path):
    produced: list[int] = []

    def consume(end: int) -> None:
        raise RuntimeError("edge failed")

    with pytest.raises(RuntimeError, match="edge failed"):
        run_pipelined(lambda first, end: produced.append(end), batches(0, 400, 4), consume)
    assert len(produced) <= 2  # the one consumed and the one produced meanwhile: then it stopped
    assert not [t for t in threading.enumerate() if t.name == "acquisition-writer"]


SCRIPT = textwrap.dedent(
    """
    import sys
    from tests.drift.test_pipeline import pipelined_run
    pipelined_run(sys.argv[1], int(sys.argv[2]), sys.argv[3])
    """
)


def test_sigkill_at_any_moment_then_resume(unbroken, tmp_path):
    registry, expected = unbroken
    path = tmp_path / "killed.zarr"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    kills = 0
    for target in (12, 30):
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(path), str(N), str(registry)], env=env)
        deadline = time.monotonic() + 120
        while _decided(path) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        # Anywhere in a batch: its inference, the frames' commit, the edge's commit.
        time.sleep(np.random.default_rng(target).uniform(0, 0.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += proc.returncode == -signal.SIGKILL
    assert kills == 2  # really killed mid-run, not finished
    subprocess.run([sys.executable, "-c", SCRIPT, str(path), str(N), str(registry)], env=env, check=True)
    _assert_same_decisions(read_decisions(path), expected)


def test_warm_makes_the_execution_choice_the_batches_use(tmp_path):
    # The trial runs before the first frame, for the shape the loop's batches then have: the
    # first batch finds its choice made instead of timing every path inside its latency.
    from tasks.inference.execution import forget_choices

    twin = _twin()
    path = tmp_path / "warm.zarr"
    writer = DatasetWriter.open(path, twin.state())
    loop = EdgeLoop.open(path, registry=ModelRegistry(tmp_path / "registry"), settings=SETTINGS)
    forget_choices()
    loop.warm(twin.shape, float(twin.conditions(0)["pixel_size"]))
    chosen = dict(loop.adaptive.active.runner.choices)
    assert len(chosen) == 1
    writer.append([twin.acquire(i) for i in range(BATCH)])
    loop.advance(BATCH)
    assert loop.adaptive.active.runner.choices == chosen


def test_without_a_spare_core_the_stages_take_turns_in_the_calling_thread() -> None:
    # Two stages on as many cores as the edge's threads only compete (benchmarks/loop.py):
    # then each batch is produced, then consumed, by the caller, with no thread started.
    from tasks.drift.pipeline import overlap_pays

    assert isinstance(overlap_pays(), bool)
    events: list[tuple[str, int, str]] = []
    before = threading.active_count()
    out = run_pipelined(
        lambda first, end: events.append(("produce", end, threading.current_thread().name)),
        [(0, 4), (4, 8), (8, 10)],
        lambda end: events.append(("consume", end, threading.current_thread().name)) or end,
        overlap=False,
    )
    assert out == [4, 8, 10]
    assert [e[:2] for e in events] == [
        ("produce", 4),
        ("consume", 4),
        ("produce", 8),
        ("consume", 8),
        ("produce", 10),
        ("consume", 10),
    ]
    assert {e[2] for e in events} == {threading.current_thread().name}
    assert threading.active_count() == before
