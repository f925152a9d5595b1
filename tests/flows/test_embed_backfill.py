"""The embeddings back-fill flow against a real Prefect API and a real store on loopback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flows.embed_backfill import backfill_flow
from storage.datasets import DatasetWriter
from storage.datasets.embeddings import read_embeddings
from storage.federation.embedded import serve_in_thread
from storage.federation.similarity.client import similar
from storage.provenance import record_dataset
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.embedding import EMBEDDER_VERSION, embed_frames


def _archive_dataset(path: Path, lattice: str, n: int) -> Path:
    """A dataset written by another tool: frames, no embeddings."""
    twin = DigitalTwin(seed=5, schedule=DriftSchedule((), {"lattice": lattice, "drift_x": 4.0}))
    DatasetWriter.open(path, twin.state()).append([twin.acquire(i) for i in range(n)])
    return path


def test_backfill_embeds_the_store_archive_and_resumes(
    prefect_api: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _archive_dataset(tmp_path / "a.zarr", "graphene", 10)
    b = _archive_dataset(tmp_path / "b.zarr", "perovskite", 6)
    with serve_in_thread(tmp_path / "store") as store:
        monkeypatch.setenv("SCOPEFLOW_STORE_URL", store.url)
        monkeypatch.setenv("SCOPEFLOW_STORE_TOKEN", store.token)
        with store.client() as client:
            ids = {p: record_dataset(client, p) for p in (a, b)}
            out = backfill_flow(n_workers=1, processes=False, batch_frames=4)
            assert out["frames"] == 16
            for path, n in ((a, 10), (b, 6)):
                frames, vectors = read_embeddings(path, EMBEDDER_VERSION)
                assert frames.tolist() == list(range(n))
                import xarray as xr

                images = xr.open_zarr(path)["frames"].values
                assert np.allclose(vectors, embed_frames(list(images), 0.12), atol=1e-5)
                assert out["datasets"][str(path)]["sent"] == n
            hits = similar(client, embedder=EMBEDDER_VERSION, record=ids[b], frame=0, k=6)["items"]
            assert {h["id"] for h in hits} == {ids[b]}
            # Everything is embedded: a second run has nothing to do.
            assert (
                backfill_flow(n_workers=1, processes=False, to_store=False, datasets=[str(a)])["frames"] == 0
            )
