"""Frame embeddings of a dataset, one set per embedder version.

Layout: subgroup ``embeddings/<embedder_version>`` of the dataset group, one table along
``embedded``: ``embedded_frame`` (frame position in the dataset), ``embedding``
(``embedded`` × ``feature``, float32, unit length) and, for embedders that describe crops of
each frame too, ``crop_embedding`` (``embedded`` × ``crop`` × ``feature``). Group attributes: ``embedder_version``,
``created``. Read with ``xarray.open_zarr(path, group="embeddings/<version>")``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from zarr.storage import LocalStore

from scopeflow.errors import InputError, NotFoundError

from .tables import Table, commit, open_root, repair, storage_errors, writing

GROUP = "embeddings"
DIM = "embedded"


class EmbeddingWriter:
    """Appends frame embeddings to ``embeddings/<embedder_version>``; each append commits."""

    def __init__(self, path: Path, table: Table) -> None:
        self.path = path
        self.table = table

    @classmethod
    def open(cls, path: str | Path, embedder_version: str) -> EmbeddingWriter:
        """Open (creating if needed) the embeddings of ``embedder_version`` in the dataset at ``path``."""
        path = Path(path)
        if not (path / "zarr.json").exists():
            raise NotFoundError(f"no scopeflow dataset at {path} (no zarr.json)")
        if not embedder_version or "/" in embedder_version:
            raise InputError(f"bad embedder version name {embedder_version!r}")
        repair(path, owned=lambda name: name.startswith(f"{GROUP}/{embedder_version}/"))
        root = open_root(path, create=False)
        # Under the writers' lock: a commit publishes every array's current shape (another
        # writer's half-written batch without it), and another writer's commit lists the nodes.
        with writing(path), storage_errors(path):
            group = root.require_group(GROUP).require_group(embedder_version)
            if "embedder_version" not in group.attrs:
                group.attrs.update(
                    {"embedder_version": embedder_version, "created": dt.datetime.now(dt.UTC).isoformat()}
                )
            commit(path, {group.path: None})
        return cls(path, Table(group, DIM))

    def done(self) -> np.ndarray:
        """Frame positions already embedded."""
        arr = self.table.columns().get("embedded_frame")
        return np.zeros(0, np.int64) if arr is None else np.asarray(arr[:])

    def append(self, frames: Sequence[int], vectors: np.ndarray, crops: np.ndarray | None = None) -> int:
        """Record the embeddings (n, d) of frames at positions ``frames`` (and of their crops,
        (n, c, d)) and commit."""
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or len(vectors) != len(frames):
            raise InputError(f"{len(frames)} frame positions but embeddings of shape {vectors.shape}")
        columns = {"embedded_frame": np.asarray(frames, np.int64), "embedding": vectors}
        if crops is not None:
            crops = np.asarray(crops, np.float32)
            if crops.ndim != 3 or len(crops) != len(frames) or crops.shape[2] != vectors.shape[1]:
                raise InputError(f"crop embeddings of shape {crops.shape} for embeddings {vectors.shape}")
            columns["crop_embedding"] = crops
        if not len(frames):
            return 0
        with writing(self.path), storage_errors(self.path):
            self.table.append(
                columns, dims={"embedding": ("feature",), "crop_embedding": ("crop", "feature")}
            )
            # Only this table's columns are published (its group was committed by ``open``):
            # zarr's whole consolidation opens every node of the dataset, ~30 ms a batch once
            # the edge's tables are there (benchmarks/loop.py, 2026-11-30).
            commit(self.path, self.table.metadata())
        return len(frames)


def read_embeddings(path: str | Path, embedder_version: str) -> tuple[np.ndarray, np.ndarray]:
    """(frame positions, embeddings) committed for ``embedder_version``; empty arrays if none.

    Read through the committed (consolidated) metadata, as every reader of the dataset: a
    batch in flight, or one a killed writer left, is not there yet.
    """
    try:
        ds = xr.open_zarr(
            LocalStore(Path(path), read_only=True), group=f"{GROUP}/{embedder_version}", consolidated=True
        )
    except (FileNotFoundError, KeyError, ValueError):
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    if "embedded_frame" not in ds:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    return ds["embedded_frame"].values.astype(np.int64), ds["embedding"].values.astype(np.float32)


def read_crop_embeddings(path: str | Path, embedder_version: str) -> tuple[np.ndarray, np.ndarray]:
    """(frame positions, crop embeddings (n, crops, d)) committed for ``embedder_version``;
    empty arrays if none (an embedder that describes no crops)."""
    try:
        ds = xr.open_zarr(
            LocalStore(Path(path), read_only=True), group=f"{GROUP}/{embedder_version}", consolidated=True
        )
    except (FileNotFoundError, KeyError, ValueError):
        return np.zeros(0, np.int64), np.zeros((0, 0, 0), np.float32)
    if "crop_embedding" not in ds:
        return np.zeros(0, np.int64), np.zeros((0, 0, 0), np.float32)
    return ds["embedded_frame"].values.astype(np.int64), ds["crop_embedding"].values.astype(np.float32)
