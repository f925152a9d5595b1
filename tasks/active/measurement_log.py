"""Measurements of a campaign in the run's Zarr dataset: one row per spectrum, with provenance.

Layout: subgroup ``measurements`` of the dataset group, columns along dim ``measurement``:
``row``, ``col`` (px of the survey frame), ``candidate``, ``spectrum`` (measurement, energy;
counts), ``value`` (scalarized), ``step``, ``acquisition``, ``approval``, ``predicted_mean``,
``predicted_std``, ``seconds`` (instrument time), ``dose`` (e/Å²), ``time`` (ns since 1970, UTC);
``energy`` (eV) along dim ``energy``. Group attrs hold the provenance (schema version, survey
frame, channel, scalarizer, surrogate, acquisition, seed) and the operator's answers
(``decisions``: step, verdict, note, the candidates rejected). Each ``append`` is one atomic
commit, so a crash loses at most the batch in flight; ``history`` reads back what a new run
needs to take the campaign up where the last one stopped.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.storage import LocalStore

from scopeflow.errors import InputError, NotFoundError
from storage.datasets.tables import Table, commit, open_root, repair, storage_errors, writing

GROUP = "measurements"
DIM = "measurement"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class History:
    """An earlier campaign in a dataset: candidates measured, their values, skipped, last step."""

    candidates: list[int]
    values: list[float]
    skipped: list[int]
    step: int
    spectra: np.ndarray | None = None  # (n, n_e) counts


class MeasurementLog:
    """Appends measured spectra and their decisions to ``<dataset>/measurements``."""

    def __init__(self, path: str | Path, energy: np.ndarray, provenance: Mapping[str, Any]) -> None:
        self.path = Path(path)
        if not (self.path / "zarr.json").exists():
            raise NotFoundError(f"no scopeflow dataset at {self.path}: write the survey frame first")
        # A campaign killed mid-batch left rows beyond the commit: they were never measured as
        # far as anyone reading the dataset knows, so the history must not count them.
        repair(self.path, owned=lambda name: name.startswith(f"{GROUP}/"))
        root = open_root(self.path, create=False)
        with storage_errors(self.path):
            group = root.require_group(GROUP)
            energy = np.asarray(energy, dtype=np.float64)
            if "energy" in group:
                stored = np.asarray(group["energy"][:])
                if stored.shape != energy.shape or not np.allclose(stored, energy):
                    raise InputError(f"{self.path}/{GROUP} holds spectra on another energy axis")
            else:
                arr = group.create_array(
                    "energy",
                    shape=energy.shape,
                    dtype="float64",
                    dimension_names=("energy",),
                    attributes={"units": "eV"},
                )
                arr[:] = energy
            runs = list(group.attrs.get("runs", []))
            runs.append(json.loads(json.dumps(dict(provenance), default=str)))
            group.attrs.update(
                {
                    "scopeflow_schema": SCHEMA_VERSION,
                    "runs": runs,
                    "updated": dt.datetime.now(dt.UTC).isoformat(),
                }
            )
        self.group = group
        # 64 spectra per chunk: few files, and a batch rewrites at most one partial chunk.
        self.table = Table(group, DIM, chunk_rows={"spectrum": 64})
        self.run = len(runs) - 1
        self._commit()

    def _commit(self) -> None:
        """Publish this log's group and columns (only those: see ``commit``)."""
        with writing(self.path):
            commit(self.path, {self.group.path: None, f"{GROUP}/energy": None} | self.table.metadata())

    def __len__(self) -> int:
        return len(self.table)

    def history(self) -> History:
        """What earlier runs measured (committed rows only), skipped and the last step."""
        n = len(self.table)
        if n == 0:
            return History([], [], [], 0)
        with storage_errors(self.path):
            cand = np.asarray(self.group["candidate"][:n], dtype=np.int64)
            vals = np.asarray(self.group["value"][:n], dtype=np.float64)
            step = int(np.asarray(self.group["step"][:n]).max())
            spectra = np.asarray(self.group["spectrum"][:n], dtype=np.float64)
        skipped = sorted(
            {int(i) for d in self.group.attrs.get("decisions", []) for i in d.get("skipped", [])}
        )
        return History(cand.tolist(), vals.tolist(), skipped, step, spectra)

    def decide(self, *, step: int, verdict: str, note: str = "", skipped: Sequence[int] = ()) -> None:
        """Record the operator's answer about a batch (and the candidates it rejected); commits."""
        with storage_errors(self.path):
            decisions = list(self.group.attrs.get("decisions", []))
            decisions.append(
                {
                    "run": self.run,
                    "step": int(step),
                    "verdict": verdict,
                    "note": note,
                    "skipped": [int(i) for i in skipped],
                    "time": dt.datetime.now(dt.UTC).isoformat(),
                }
            )
            self.group.attrs.update({"decisions": decisions})
        self._commit()

    def append(
        self,
        *,
        rowcol: np.ndarray,
        candidate: Sequence[int],
        spectra: np.ndarray,
        values: np.ndarray,
        step: int,
        scorer: str,
        approval: str,
        predicted_mean: Sequence[float],
        predicted_std: Sequence[float],
        seconds: np.ndarray,
        dose: np.ndarray,
    ) -> int:
        """Append one batch of measurements and commit; returns the total count. ``scorer`` (the
        acquisition function's name, or "initial") is stored in the column ``acquisition``."""
        n = len(candidate)
        now = np.datetime64(dt.datetime.now(dt.UTC).replace(tzinfo=None), "ns").astype(np.int64)
        data = {
            "row": np.asarray(rowcol, dtype=np.float64)[:, 0],
            "col": np.asarray(rowcol, dtype=np.float64)[:, 1],
            "candidate": np.asarray(candidate, dtype=np.int64),
            "spectrum": np.asarray(spectra, dtype=np.float32),
            "value": np.asarray(values, dtype=np.float64),
            "step": np.full(n, step, dtype=np.int64),
            "run": np.full(n, self.run, dtype=np.int64),
            "acquisition": np.full(n, scorer),
            "approval": np.full(n, approval),
            "predicted_mean": np.asarray(predicted_mean, dtype=np.float64),
            "predicted_std": np.asarray(predicted_std, dtype=np.float64),
            "seconds": np.asarray(seconds, dtype=np.float64),
            "dose": np.asarray(dose, dtype=np.float64),
            "time": np.full(n, now, dtype=np.int64),
        }
        attrs = {
            "row": {"units": "pixel"},
            "col": {"units": "pixel"},
            "spectrum": {"units": "counts", "coordinates": "energy"},
            "seconds": {"units": "s", "description": "instrument time: dwell plus beam settling"},
            "dose": {"units": "electron / angstrom**2"},
            "time": {"units": "nanoseconds since 1970-01-01", "calendar": "proleptic_gregorian"},
        }
        with storage_errors(self.path):
            total = self.table.append(data, dims={"spectrum": ("energy",)}, attrs=attrs)
        self._commit()
        return total


def open_measurements(path: str | Path) -> xr.Dataset:
    """The committed measurements of a dataset as an ``xarray.Dataset``."""
    path = Path(path)
    if not (path / GROUP / "zarr.json").exists():
        raise NotFoundError(f"no measurements in {path}")
    return xr.open_zarr(LocalStore(path, read_only=True), group=GROUP, consolidated=True)


def measurement_attrs(path: str | Path) -> dict[str, Any]:
    """Provenance attributes of the measurements group."""
    root = zarr.open_group(store=LocalStore(Path(path), read_only=True), mode="r", use_consolidated=True)
    return dict(root[GROUP].attrs)
