"""The drift-aware edge loop with the shipped ensemble on a small twin dataset; the promotion gate."""

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.storage import LocalStore

from scopeflow.errors import ShapeMismatchError
from scopeflow.settings import EdgeSettings
from storage.datasets import DatasetWriter, commit
from storage.datasets.decisions import decisions_csv, read_decisions, read_monitor_state
from storage.datasets.predictions import prediction_versions, read_atoms, read_predictions
from storage.models import ModelRegistry
from tasks.acquisition.loop import acquire_run
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.drift.edge_loop import EdgeLoop, run_adaptive_edge
from tasks.inference.registry import load_ensemble, save_ensemble
from tasks.training.retrain import verdict


@pytest.fixture(scope="module")
def drifting_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("edge") / "run.zarr"
    twin = DigitalTwin(seed=4, schedule=DriftSchedule.parse("defocus=150@48,dose=8e4@48"), shape=(128, 128))
    acquire_run(twin, str(path), 80, batch_size=16)
    return path


def test_loop_decides_every_batch_detects_the_jump_and_escalates(drifting_dataset, tmp_path):
    escalations = []
    registry = ModelRegistry(tmp_path / "registry")
    settings = EdgeSettings(ert=1000, reference_frames=32, batch_size=8)
    loop = EdgeLoop.open(drifting_dataset, registry=registry, settings=settings)
    held = []  # after each batch: frames in the check's context (its pooled spectra), and since the change

    def count(report) -> None:
        d = report.outcome.decision
        since = report.stop - max(report.start, d.first_alarm if d.first_alarm is not None else report.start)
        held.append((d.detected, len(loop.adaptive.context), since))

    summary = run_adaptive_edge(drifting_dataset, escalate=escalations.append, loop=loop, on_batch=count)
    decided = read_decisions(drifting_dataset)
    # The conditions before a detection must not confirm a crystal after it: the check's
    # context keeps only the frames from the first alarm on; in between it holds the last 16.
    assert int(decided["detected"].sum()) >= 1
    assert all(n == since for detected, n, since in held if detected)
    assert max(n for _, n, _ in held) == 16
    assert list(decided["frame_start"]) == list(range(0, 80, 8))
    assert not decided["detected"][:4].any()  # the reference, then a stationary batch
    first = summary["detections"][0]
    assert 48 <= first <= 48 + 15  # the defocus jump and dose drop at frame 48
    assert escalations, "a drift beyond the members' reach must escalate to retraining"
    assert escalations[0].frame_start >= 48
    f1 = dict(summary["f1_by_batch"])
    assert f1[0] > 0.9 > f1[64]  # F1 against the twin's truth falls with the drift
    assert prediction_versions(drifting_dataset) == [summary["model_version"]]
    header = decisions_csv(drifting_dataset).splitlines()[0]
    assert header.startswith("frame_start,frame_end,detected,action,")
    # The active members' decoder threshold is kept with the monitor state, and a loop opened
    # again on the run decodes at it (a selected regime's own, or the model's: None).
    attrs, _ = read_monitor_state(drifting_dataset)
    assert attrs["member_threshold"] == loop.adaptive.threshold
    again = EdgeLoop.open(drifting_dataset, registry=registry, settings=settings)
    assert again.adaptive.members == loop.adaptive.members
    assert again.adaptive.active.config.threshold == loop.adaptive.active.config.threshold


def test_atoms_per_frame_in_plain_xarray_and_a_kept_loop_does_only_new_frames(tmp_path):
    # What the fixed-model edge loop (run_edge) checked, now on the one loop.
    twin = DigitalTwin(3, DriftSchedule.parse("defocus=40@3"), (96, 96))
    path = tmp_path / "run.zarr"
    writer = DatasetWriter.open(path, twin.state())
    writer.append([twin.acquire(i) for i in range(5)])
    loop = EdgeLoop.open(
        path, registry=ModelRegistry(tmp_path / "registry"), settings=EdgeSettings(batch_size=2)
    )
    batches = []
    summary = run_adaptive_edge(path, loop=loop, on_batch=batches.append)
    assert [(b.start, b.stop) for b in batches] == [(0, 2), (2, 4), (4, 5)]
    assert summary["frames_processed"] == 5
    assert summary["f1"] > 0.9
    assert prediction_versions(path) == [summary["model_version"]]
    # Plain xarray reads the prediction set; the frames are untouched.
    ds = xr.open_zarr(LocalStore(path, read_only=True), group=f"predictions/{summary['model_version']}")
    assert ds.attrs["model_version"] == summary["model_version"]
    assert int(ds["atom_count"].sum()) == summary["atoms"] == ds.sizes["atom"]
    atoms = read_atoms(read_predictions(path), 4)
    assert len(atoms) > 20 and np.isfinite(atoms.uncertainty).all()
    # More frames arrive; the loop, kept open, does only those.
    writer.append([twin.acquire(i) for i in range(5, 7)])
    again = run_adaptive_edge(path, loop=loop)
    assert again["frames_processed"] == 2
    assert sorted(read_predictions(path)["predicted_frame"].values.tolist()) == list(range(7))
    assert list(read_decisions(path)["frame_start"]) == [0, 2, 4, 5]
    # Asked to stop where it already is, it does nothing; frames committed since it last looked
    # are seen when asked for, up to where asked (the pipeline's per-batch calls).
    writer.append([twin.acquire(i) for i in range(7, 10)])
    assert loop.advance(stop_at=7) == []
    assert [(r.start, r.stop) for r in loop.advance(stop_at=9)] == [(7, 9)]
    assert [(r.start, r.stop) for r in loop.advance(stop_at=12)] == [(9, 10)]
    assert list(read_decisions(path)["frame_start"]) == [0, 2, 4, 5, 7, 9]


def test_a_failed_batch_is_forgotten_so_a_retry_neither_repeats_nor_skips(tmp_path):
    # A Prefect retry of the edge-batch task calls the same loop again after a failure.
    twin = DigitalTwin(2, DriftSchedule(), (96, 96))
    path = tmp_path / "run.zarr"
    DatasetWriter.open(path, twin.state()).append([twin.acquire(i) for i in range(8)])
    # A drift table whose frame_start column another tool stored as floats: the append fails
    # after the monitor has seen the batch and the atoms were written (uncommitted).
    root = zarr.open_group(store=LocalStore(path), mode="r+")
    root.create_group("drift").create_array(
        "frame_start", shape=(0,), dtype="float64", chunks=(8,), dimension_names=("decision",)
    )
    commit(path, {"drift/frame_start": None})
    loop = EdgeLoop.open(
        path, registry=ModelRegistry(tmp_path / "registry"), settings=EdgeSettings(batch_size=4)
    )
    with pytest.raises(ShapeMismatchError):
        loop.advance(max_batches=1)
    del root["drift"]
    commit(path, {}, drop=["drift"])
    assert [(r.start, r.stop) for r in loop.advance()] == [(0, 4), (4, 8)]
    assert list(read_decisions(path)["frame_start"]) == [0, 4]
    assert read_predictions(path)["predicted_frame"].values.tolist() == list(range(8))
    assert len(loop.adaptive.monitor.history) == 8  # the failed batch's frames were not seen twice
    attrs, _ = read_monitor_state(path)
    assert attrs["frames_seen"] == 8


def test_a_newly_promoted_model_is_adopted_at_the_next_batch(tmp_path):
    twin = DigitalTwin(2, DriftSchedule(), (96, 96))
    path = tmp_path / "run.zarr"
    DatasetWriter.open(path, twin.state()).append([twin.acquire(i) for i in range(8)])
    registry = ModelRegistry(tmp_path / "registry")
    loop = EdgeLoop.open(path, registry=registry, settings=EdgeSettings(batch_size=4))
    (first,) = loop.advance(max_batches=1)
    # Retraining (elsewhere) promotes a new version between two batches.
    promoted = save_ensemble(registry, load_ensemble("production", registry))
    registry.promote(promoted, "production")
    (second,) = loop.advance()
    assert (first.adopted, second.adopted) == (None, promoted)
    assert first.model_version != promoted == second.model_version
    assert prediction_versions(path) == sorted([first.model_version, promoted])


def test_a_rerun_resumes_after_the_last_decision(drifting_dataset, tmp_path):
    again = run_adaptive_edge(drifting_dataset, registry=ModelRegistry(tmp_path / "registry"))
    assert again["frames_processed"] == 0


def test_edge_on_a_growing_dataset_continues_the_monitor(tmp_path):
    # Issue #15 item 2: a first run at 48 frames cannot calibrate (64 are needed) and says so;
    # the second, at 144 frames, continues that reference instead of starting a new one at
    # frame 48, so the dose drop at frame 64 is the change it is (not part of a reference).
    path = tmp_path / "growing.zarr"
    twin = DigitalTwin(seed=5, schedule=DriftSchedule.parse("dose=5e5@64"), shape=(128, 128))
    registry = ModelRegistry(tmp_path / "registry")
    acquire_run(twin, str(path), 48, batch_size=16)
    first = run_adaptive_edge(path, registry=registry)
    assert first["frames_processed"] == 48
    assert "collecting the reference: 48 of 64 frames" in first["monitor"]
    acquire_run(twin, str(path), 144, batch_size=16)
    second = run_adaptive_edge(path, registry=registry)
    assert second["frames_processed"] == 96
    assert second["detections"] and 64 <= second["detections"][0] < 64 + 16
    decided = read_decisions(path)
    detected = int(np.flatnonzero(decided["detected"])[0])
    assert "dose" in str(decided["changed"][detected])
    assert decided["attr_dose_ratio"][detected] == pytest.approx(0.1, rel=0.25)
    report = decisions_csv(path).splitlines()
    assert report[0].startswith("frame_start,frame_end,detected,action,")
    assert "dose_ratio" in report[0] and "changed" in report[0]


@pytest.mark.parametrize(
    ("f1", "promote"),
    [
        (
            {
                "new_production": 0.5,
                "new_candidate": 0.8,
                "reference_production": 0.97,
                "reference_candidate": 0.965,
            },
            True,
        ),
        (
            {
                "new_production": 0.5,
                "new_candidate": 0.5,
                "reference_production": 0.97,
                "reference_candidate": 0.97,
            },
            False,
        ),
        (
            {
                "new_production": 0.5,
                "new_candidate": 0.9,
                "reference_production": 0.97,
                "reference_candidate": 0.95,
            },
            False,
        ),
    ],
)
def test_a_worse_candidate_is_never_promoted(f1, promote):
    ok, reason = verdict(f1)
    assert ok is promote
    assert reason.startswith("promoted" if promote else "kept production")
    assert np.isfinite(f1["new_candidate"])


def test_a_restarted_loop_keeps_the_checks_context(tmp_path, caplog):
    # A frame too faint to show its crystal alone is judged with the run's frames before it
    # (``verify.CheckContext``): a loop killed and started again continues with them (their
    # positions and fingerprints stored with the monitor state), and answers as the loop it
    # replaces; a stored context that cannot be used leaves it empty, with a warning.
    import logging
    import shutil

    from storage.datasets import Dataset

    twin = DigitalTwin(
        seed=21, schedule=DriftSchedule(base={"dose": 4e4, "pixel_size": 0.12}), shape=(128, 128)
    )
    path = tmp_path / "run.zarr"
    acquire_run(twin, str(path), 24, batch_size=8)
    registry = ModelRegistry(tmp_path / "registry")
    settings = EdgeSettings(batch_size=2)
    first = EdgeLoop.open(path, registry=registry, settings=settings)
    first.advance(stop_at=16)
    assert len(first.adaptive.context) == 16
    for copy in ("restarted.zarr", "corrupt.zarr"):
        shutil.copytree(path, tmp_path / copy)
    kept = [a for r in first.advance() for a in r.atoms]

    restarted = EdgeLoop.open(tmp_path / "restarted.zarr", registry=registry, settings=settings)
    assert len(restarted.adaptive.context) == 16
    again = [a for r in restarted.advance() for a in r.atoms]
    assert [len(a) for a in again] == [len(a) for a in kept]
    for a, b in zip(again, kept, strict=True):
        np.testing.assert_allclose(a.rowcol, b.rowcol, atol=1e-4)

    attrs, arrays = read_monitor_state(tmp_path / "corrupt.zarr")
    attrs["check_context"]["keys"][0]["fingerprints"][0] = "00" * 16
    data = Dataset(tmp_path / "corrupt.zarr")
    with data.batch():
        data.write_monitor_state(attrs, arrays)
    with caplog.at_level(logging.WARNING, logger="tasks.drift.edge_loop"):
        corrupt = EdgeLoop.open(tmp_path / "corrupt.zarr", registry=registry, settings=settings)
    assert "check context is not usable" in caplog.text
    assert len(corrupt.adaptive.context) == 0
    empty = [a for r in corrupt.advance() for a in r.atoms]
    assert len(empty) == 8
    assert sum(len(a) == 0 for a in empty) > sum(len(a) == 0 for a in kept)
