"""Re-analysis over dask gives the atoms in-process inference gives, as a new prediction set."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from zarr.storage import LocalStore

from flows.reprocess import reprocess_flow
from storage.datasets import open_dataset
from storage.datasets.predictions import prediction_versions, read_atoms, read_predictions
from tasks.inference.reprocess import reprocess
from tests.helpers.prefect_api import artifacts

from .conftest import TinyModel, make_dataset


def test_dask_reanalysis_matches_in_process_inference(
    tmp_path: Path, tiny_model: TinyModel, caplog: pytest.LogCaptureFixture
) -> None:
    path = make_dataset(tmp_path / "run.zarr", frames=5)
    result = reprocess(
        path,
        tiny_model.version,
        registry=tiny_model.registry,
        n_workers=2,
        processes=False,  # threads: the same code path as processes, without two torch imports
        batch_frames=2,
        prediction_set="rerun",
    )
    assert (result.frames_processed, result.workers, result.model_version) == (5, 2, tiny_model.version)
    chatter = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("distributed") and r.levelno < logging.WARNING
    ]
    assert not chatter, chatter[:3]  # dask's start-up INFO lines stay off the console
    ds = open_dataset(path)
    expected = tiny_model.ensemble.locate(list(ds["frames"].values), list(ds["pixel_size"].values))
    pred = read_predictions(path, "rerun")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert [v for v in pred.data_vars if f"`{v}`" not in readme] == []  # the README names the real ones
    assert sum(len(a) for a in expected) == result.atoms == pred.sizes["atom"] > 0
    for i, want in enumerate(expected):
        got = read_atoms(pred, i)
        np.testing.assert_allclose(got.rowcol, want.rowcol, atol=1e-4)
        np.testing.assert_allclose(got.uncertainty, want.uncertainty, atol=1e-5)
        np.testing.assert_array_equal(got.cls, want.cls)
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
