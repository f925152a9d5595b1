"""Re-analysis over dask gives the atoms in-process inference gives, as a new prediction set."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.storage import LocalStore

from flows.reprocess import reprocess_flow
from scopeflow.errors import InputError
from storage.datasets import open_dataset
from storage.datasets.predictions import prediction_versions, read_atoms, read_predictions
from tasks.inference.reprocess import MALLOC_TRIM, Cluster, reprocess
from tests.helpers.prefect_api import artifacts

from .conftest import TinyModel, make_dataset

# distributed warns when making a worker's scratch directory takes over 1 s: a timing remark that
# a loaded shared disk triggers, not a fault (warnings are errors in this suite).
pytestmark = pytest.mark.filterwarnings("ignore:Creating scratch directories is taking:UserWarning")


def assert_same_as_in_process(path: Path, prediction_set: str, tiny_model: TinyModel) -> int:
    """The set holds, frame by frame, the atoms the ensemble finds in this process; returns their count."""
    ds = open_dataset(path)
    expected = tiny_model.ensemble.locate(list(ds["frames"].values), list(ds["pixel_size"].values))
    pred = read_predictions(path, prediction_set)
    assert sum(len(a) for a in expected) == pred.sizes["atom"] > 0
    for i, want in enumerate(expected):
        got = read_atoms(pred, i)
        np.testing.assert_allclose(got.rowcol, want.rowcol, atol=1e-4)
        np.testing.assert_allclose(got.uncertainty, want.uncertainty, atol=1e-5)
        np.testing.assert_array_equal(got.cls, want.cls)
    return int(pred.sizes["atom"])


def test_dask_reanalysis_matches_in_process_inference(
    tmp_path: Path, tiny_model: TinyModel, caplog: pytest.LogCaptureFixture
) -> None:
    path = make_dataset(tmp_path / "run.zarr", frames=5)
    # Worker processes, as deployed: each reads its frames from the store and scores them there.
    result = reprocess(
        path,
        tiny_model.version,
        registry=tiny_model.registry,
        n_workers=2,
        processes=True,
        batch_frames=2,
        prediction_set="rerun",
    )
    assert (result.frames_processed, result.workers, result.model_version) == (5, 2, tiny_model.version)
    assert len(result.worker_cpu_seconds) == 2 and result.f1 is not None
    chatter = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("distributed") and r.levelno < logging.WARNING
    ]
    assert not chatter, chatter[:3]  # dask's start-up INFO lines stay off the console
    assert not [r for r in caplog.records if MALLOC_TRIM in r.getMessage()]  # our workers run without it
    assert assert_same_as_in_process(path, "rerun", tiny_model) == result.atoms
    pred = read_predictions(path, "rerun")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert [v for v in pred.data_vars if f"`{v}`" not in readme] == []  # the README names the real ones
    # Provenance rides with the set, readable by plain xarray.
    attrs = xr.open_zarr(LocalStore(path, read_only=True), group="predictions/rerun").attrs
    prov = attrs["provenance"]
    assert attrs["model_version"] == tiny_model.version
    assert prov["activity"] == "reprocess" and prov["dataset"] == str(path.resolve())
    assert len(prov["model_sha256"]) == 64 and prov["workers"] == 2 and "finished" in prov
    # Naming the set again resumes it: nothing left to do.
    again = reprocess(
        path, tiny_model.version, registry=tiny_model.registry, processes=False, prediction_set="rerun"
    )
    assert again.frames_processed == 0


def test_local_workers_start_without_dask_malloc_trim() -> None:
    # dask's nanny exports MALLOC_TRIM_THRESHOLD_=65536 to its workers: glibc then maps every
    # tensor afresh and a frame costs about twice the CPU (tasks/inference/reprocess.py).
    cluster = Cluster(None, 1, 1, processes=True)
    try:
        assert set(cluster.client.run(os.environ.get, MALLOC_TRIM).values()) == {None}
        assert MALLOC_TRIM not in os.environ  # nor is this process left with it for later children
    finally:
        cluster.close()


def test_a_failed_batch_keeps_the_batches_before_it_and_the_run_resumes(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    path = make_dataset(tmp_path / "run.zarr", frames=5)
    frames = zarr.open_array(store=LocalStore(path), path="frames", mode="r+")
    good = frames[3].copy()
    frames[3] = np.nan  # the worker refuses frame 3: the batch [2, 4) fails
    with pytest.raises(InputError, match=r"frames 2\.\.3: frame 1: contains NaN"):
        reprocess(
            path,
            tiny_model.version,
            registry=tiny_model.registry,
            n_workers=1,
            processes=False,
            batch_frames=2,
            prediction_set="rerun",
        )
    done = read_predictions(path, "rerun")["predicted_frame"].values
    assert sorted(done.tolist()) == [0, 1]  # committed before the failure, nothing after it
    frames[3] = good
    resumed = reprocess(
        path,
        tiny_model.version,
        registry=tiny_model.registry,
        n_workers=1,
        processes=False,
        batch_frames=2,
        prediction_set="rerun",
    )
    assert resumed.frames_processed == 3
    assert_same_as_in_process(path, "rerun", tiny_model)


def test_reprocess_flow_publishes_artifacts(
    prefect_api: None, tmp_path: Path, tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCOPEFLOW_MEDIA_DIR", str(tmp_path / "media"))
    path = make_dataset(tmp_path / "run.zarr", frames=3)
    state = reprocess_flow(
        dataset=str(path),
        model=tiny_model.version,
        registry=str(tiny_model.registry),
        n_workers=1,
        processes=False,
        batch_frames=2,
        return_state=True,
    )
    summary = state.result()
    assert summary["frames_processed"] == 3
    assert summary["prediction_set"] in prediction_versions(path)
    found = artifacts(flow_run_id=str(state.state_details.flow_run_id))
    assert {a.key: a.type for a in found if a.key} == {
        "reprocess-batches": "table",
        "reprocess-progress": "progress",
        "reprocess-overlay": "image",
        "reprocess-f1": "image",
        "reprocess-summary": "markdown",
    }
    assert len(list((tmp_path / "media").glob("reprocess-*.png"))) == 2
