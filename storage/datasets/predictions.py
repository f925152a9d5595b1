"""Atom columns found in a dataset's frames, one prediction set per model version.

Layout: subgroup ``predictions/<model_version>`` of the dataset group, holding two tables
that grow together and commit atomically with the dataset (consolidated metadata):

- along ``atom``: ``atom_frame`` (frame position in the dataset), ``atom_row``,
  ``atom_col`` (px of the frame), ``atom_uncertainty`` (std of the members' votes, 0–0.5),
  ``atom_score`` (mean heatmap), ``atom_position_std`` (members' spread of the position,
  Å), ``atom_class`` (0 light, 1 medium, 2 heavy; -1 none), ``atom_kind`` (0 column,
  2 substitution: ``scopeflow.atoms.KINDS``), ``atom_sigma_row``, ``atom_sigma_col``
  (standard error of the position, px), ``atom_confidence`` (probability the column is there);
- along ``vacancy``: ``vacancy_frame``, ``vacancy_row``, ``vacancy_col`` (px) and
  ``vacancy_confidence``: lattice sites the frame shows empty;
- along ``predicted``: ``predicted_frame``, ``atom_count``, ``crystal`` and ``trusted``, one
  row per processed frame, so a resumed run knows which frames are done even where a frame
  had no atoms, and a reader which frames showed no lattice or did not confirm their columns.

Group attributes: ``model_version``, ``created`` and whatever the caller adds (config).
Read with ``xarray.open_zarr(path, group="predictions/<version>")`` or ``read_predictions``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.storage import LocalStore

from scopeflow.atoms import Atoms
from scopeflow.errors import InputError, NotFoundError

from .tables import Table, commit, storage_errors, writing

GROUP = "predictions"
ATOM_DIM = "atom"
FRAME_DIM = "predicted"
VACANCY_DIM = "vacancy"


class PredictionWriter:
    """Appends the atoms of processed frames to ``predictions/<model_version>``; each append commits
    unless told not to (the edge commits a batch's atoms and decision together)."""

    def __init__(self, path: Path, group: zarr.Group, model_version: str) -> None:
        self.path = path
        self.group = group
        self.model_version = model_version
        self.atoms = Table(group, ATOM_DIM)
        self.vacancies = Table(group, VACANCY_DIM)
        self.frames = Table(group, FRAME_DIM)

    def columns(self) -> dict[str, Any]:
        """Its tables' columns' metadata as written (``Table.metadata``)."""
        entries: dict[str, Any] = {}
        for table in (self.atoms, self.vacancies, self.frames):
            entries |= table.metadata()
        return entries

    def metadata(self) -> dict[str, Any]:
        """What a commit of this set publishes: its group and its columns."""
        return {self.group.path: None} | self.columns()

    def done(self) -> np.ndarray:
        """Frame positions already processed (committed or appended by this writer)."""
        arr = self.frames.columns().get("predicted_frame")
        return np.zeros(0, np.int64) if arr is None else np.asarray(arr[:])

    def append(self, frames: Sequence[int], atoms: Sequence[Atoms], *, commit_now: bool = True) -> int:
        """Record the atoms of frames at positions ``frames``; commit (unless ``commit_now`` is
        False: the caller holds the writers' lock and commits, ``Dataset.batch``). Returns atoms written."""
        if len(frames) != len(atoms):
            raise InputError(f"{len(frames)} frame positions but {len(atoms)} atom sets")
        if not frames:
            return 0
        counts = np.array([len(a) for a in atoms], np.int64)
        with writing(self.path) if commit_now else nullcontext(), storage_errors(self.path):
            if counts.sum():
                self.atoms.append(
                    {
                        "atom_frame": np.repeat(np.asarray(frames, np.int64), counts),
                        "atom_row": np.concatenate([a.rowcol[:, 0] for a in atoms]).astype(np.float32),
                        "atom_col": np.concatenate([a.rowcol[:, 1] for a in atoms]).astype(np.float32),
                        "atom_uncertainty": np.concatenate([a.uncertainty for a in atoms]).astype(np.float32),
                        "atom_score": np.concatenate([a.score for a in atoms]).astype(np.float32),
                        "atom_position_std": np.concatenate([a.position_std for a in atoms]).astype(
                            np.float32
                        ),
                        "atom_class": np.concatenate([a.cls for a in atoms]).astype(np.int8),
                        "atom_kind": np.concatenate([a.kind for a in atoms]).astype(np.int8),
                        "atom_sigma_row": np.concatenate([a.sigma[:, 0] for a in atoms]).astype(np.float32),
                        "atom_sigma_col": np.concatenate([a.sigma[:, 1] for a in atoms]).astype(np.float32),
                        "atom_confidence": np.concatenate([a.confidence for a in atoms]).astype(np.float32),
                    },
                    attrs={
                        "atom_row": {"units": "pixel"},
                        "atom_col": {"units": "pixel"},
                        "atom_position_std": {"units": "angstrom"},
                        "atom_sigma_row": {"units": "pixel"},
                        "atom_sigma_col": {"units": "pixel"},
                    },
                )
            vacant = np.array([len(a.vacancies) for a in atoms], np.int64)
            if vacant.sum():
                self.vacancies.append(
                    {
                        "vacancy_frame": np.repeat(np.asarray(frames, np.int64), vacant),
                        "vacancy_row": np.concatenate([a.vacancies[:, 0] for a in atoms]).astype(np.float32),
                        "vacancy_col": np.concatenate([a.vacancies[:, 1] for a in atoms]).astype(np.float32),
                        "vacancy_confidence": np.concatenate([a.vacancy_confidence for a in atoms]).astype(
                            np.float32
                        ),
                    },
                    attrs={"vacancy_row": {"units": "pixel"}, "vacancy_col": {"units": "pixel"}},
                )
            self.frames.append(
                {
                    "predicted_frame": np.asarray(frames, np.int64),
                    "atom_count": counts,
                    "crystal": np.array([a.crystal for a in atoms], bool),
                    "trusted": np.array([a.trusted for a in atoms], bool),
                }
            )
            if commit_now:
                commit(self.path, self.metadata())
        return int(counts.sum())


def new_prediction_group(
    path: Path, root: zarr.Group, name: str, attrs: dict[str, Any] | None = None
) -> zarr.Group:
    """The group ``predictions/<name>`` under ``root``, created with its attributes if absent."""
    with storage_errors(path):
        group = root.require_group(GROUP).require_group(name)
        if "model_version" not in group.attrs:
            group.attrs.update(
                {"model_version": name, "created": dt.datetime.now(dt.UTC).isoformat(), **(attrs or {})}
            )
    return group


def prediction_versions(path: str | Path) -> list[str]:
    """Model versions with a prediction set in the dataset at ``path``."""
    root = zarr.open_group(store=LocalStore(Path(path), read_only=True), mode="r", use_consolidated=True)
    if GROUP not in root:
        return []
    return sorted(name for name, _ in root[GROUP].groups())


def read_predictions(path: str | Path, model_version: str | None = None) -> xr.Dataset:
    """The committed prediction set of ``model_version`` (the only one if None) as an xarray Dataset."""
    versions = prediction_versions(path)
    if model_version is None:
        if len(versions) != 1:
            raise InputError(f"dataset {path} holds prediction sets {versions}: name one")
        model_version = versions[0]
    if model_version not in versions:
        raise NotFoundError(f"dataset {path} has no predictions of model {model_version!r} (has: {versions})")
    return xr.open_zarr(
        LocalStore(Path(path), read_only=True), group=f"{GROUP}/{model_version}", consolidated=True
    )


def read_atoms(ds: xr.Dataset, frame: int) -> Atoms:
    """Atoms of frame position ``frame`` from a dataset returned by ``read_predictions``."""
    if "atom_frame" not in ds:
        return Atoms.empty()
    which = np.flatnonzero(ds["atom_frame"].values == frame)

    def column(name: str) -> np.ndarray | None:
        # Prediction sets written before a field existed simply lack it.
        return ds[name].values[which] if name in ds else None

    sigma = None
    if "atom_sigma_row" in ds:
        sigma = np.stack([ds["atom_sigma_row"].values[which], ds["atom_sigma_col"].values[which]], axis=1)
    vacancies = vacancy_confidence = None
    if "vacancy_frame" in ds:
        v = np.flatnonzero(ds["vacancy_frame"].values == frame)
        vacancies = np.stack([ds["vacancy_row"].values[v], ds["vacancy_col"].values[v]], axis=1)
        vacancy_confidence = ds["vacancy_confidence"].values[v]
    return Atoms(
        rowcol=np.stack([ds["atom_row"].values[which], ds["atom_col"].values[which]], axis=1),
        uncertainty=ds["atom_uncertainty"].values[which],
        score=ds["atom_score"].values[which],
        cls=ds["atom_class"].values[which],
        position_std=column("atom_position_std"),
        kind=column("atom_kind"),
        sigma=sigma,
        confidence=column("atom_confidence"),
        vacancies=vacancies,
        vacancy_confidence=vacancy_confidence,
    )
