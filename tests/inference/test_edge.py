"""Edge inference over a dataset: atoms written beside the frames, F1 against truth, resumable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from zarr.storage import LocalStore

from storage.datasets import DatasetWriter
from storage.datasets.predictions import prediction_versions, read_atoms, read_predictions
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.inference.edge import run_edge


def test_edge_writes_atoms_per_frame_and_resumes(tmp_path: Path, ensemble) -> None:  # type: ignore[no-untyped-def]
    twin = DigitalTwin(3, DriftSchedule.parse("defocus=40@3"), (96, 96))
    path = tmp_path / "run.zarr"
    writer = DatasetWriter.open(path, twin.state())
    writer.append([twin.acquire(i) for i in range(5)])
    batches = []
    summary = run_edge(path, ensemble, batch_size=2, on_batch=batches.append)
    assert [(b.start, b.stop) for b in batches] == [(0, 2), (2, 4), (4, 5)]
    assert batches[0].features.shape == (2, ensemble.members * ensemble.config.widths[2])
    assert summary["frames_processed"] == 5
    assert summary["model_version"] == ensemble.version
    assert summary["f1"] > 0.9
    assert prediction_versions(path) == [ensemble.version]
    # Plain xarray reads the prediction set; the frames are untouched.
    ds = xr.open_zarr(LocalStore(path, read_only=True), group=f"predictions/{ensemble.version}")
    assert ds.attrs["model_version"] == ensemble.version
    assert int(ds["atom_count"].sum()) == summary["atoms"] == ds.sizes["atom"]
    atoms = read_atoms(read_predictions(path), 4)
    assert len(atoms) > 20 and np.isfinite(atoms.uncertainty).all()
    # More frames arrive; a second run does only those.
    writer.append([twin.acquire(i) for i in range(5, 7)])
    again = run_edge(path, ensemble, batch_size=4)
    assert again["frames_processed"] == 2
    assert sorted(read_predictions(path)["predicted_frame"].values.tolist()) == list(range(7))
