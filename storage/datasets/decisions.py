"""Drift decisions of a dataset: one row per batch in the ``drift`` subgroup, read back as CSV.

Columns along ``decision``: ``frame_start``, ``frame_end``, ``detected``, ``action``
(``none``, ``select`` or ``retrain``), ``members`` (the ensemble members in use after the
decision, comma-separated), ``model_version``, one ``score_<detector>`` column per
detector (its statistic as a multiple of its threshold: > 1 fired), and the attribution of a
detection: ``changed`` (conditions named, ``;``-separated), ``summary`` (in words) and one
``attr_<estimate>`` column per estimate in physical units (``attr_dose_ratio``,
``attr_defocus_A``, …; NaN when not estimated).

The drift monitor's state (its reference frames, calibration and window) is kept beside the
decisions in the ``drift_monitor`` group, so a later ``edge`` run on the grown dataset
continues where this one stopped (``MonitorWriter``, through ``Dataset.write_monitor_state``;
``read_monitor_state``).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.storage import LocalStore

from .file_writes import atomic_write, json_bytes
from .tables import (
    GROUP_META,
    ROW_CHUNK,
    Table,
    commit,
    consolidated_entry,
    open_root,
    storage_errors,
    writing,
)
from .zarr_metadata import fill_from_json

GROUP = "drift"
MONITOR_GROUP = "drift_monitor"
DIM = "decision"
STORED = "scopeflow_stored"  # the monitor group's attribute saying where its arrays are
ACTIONS = ("none", "select", "retrain")
HEADER = ("frame_start", "frame_end", "detected", "action")


@dataclass(frozen=True)
class DecisionRow:
    """One decision as stored."""

    frame_start: int
    frame_end: int
    detected: bool
    action: str
    members: Sequence[int]
    model_version: str
    scores: Mapping[str, float]
    changed: Sequence[str] = ()
    summary: str = ""
    attribution: Mapping[str, float] = field(default_factory=dict)


class DecisionWriter:
    """Appends decisions to a dataset's ``drift`` table; keep one open across batches.

    ``root``: the write handle of a ``Dataset`` that owns this table (default: a handle of its own).
    """

    def __init__(self, dataset: str | Path, root: zarr.Group | None = None) -> None:
        self.path = Path(dataset)
        root = root if root is not None else open_root(self.path, create=False)
        with storage_errors(self.path):
            group = root[GROUP] if GROUP in root else root.create_group(GROUP)
        self.table = Table(group, DIM)

    def append(self, rows: Sequence[DecisionRow], *, commit_now: bool = True) -> int:
        """Append decisions; returns the stored count. ``commit_now=False`` leaves the commit to the
        caller, who holds the writers' lock (``Dataset.batch``: one commit for a batch's predictions
        and decisions)."""
        for r in rows:
            if r.action not in ACTIONS:
                raise ValueError(f"action must be one of {ACTIONS}, got {r.action!r}")
        names = sorted({k for r in rows for k in r.scores})
        columns: dict[str, np.ndarray] = {
            "frame_start": np.array([r.frame_start for r in rows], np.int64),
            "frame_end": np.array([r.frame_end for r in rows], np.int64),
            "detected": np.array([r.detected for r in rows], bool),
            "action": np.array([r.action for r in rows], dtype=str),
            "members": np.array([",".join(map(str, r.members)) for r in rows], dtype=str),
            "model_version": np.array([r.model_version for r in rows], dtype=str),
        }
        for name in names:
            columns[f"score_{name}"] = np.array([r.scores.get(name, np.nan) for r in rows], np.float64)
        columns["changed"] = np.array([";".join(r.changed) for r in rows], dtype=str)
        columns["summary"] = np.array([r.summary for r in rows], dtype=str)
        for name in sorted({k for r in rows for k in r.attribution}):
            columns[f"attr_{name}"] = np.array([r.attribution.get(name, np.nan) for r in rows], np.float64)
        with writing(self.path) if commit_now else nullcontext(), storage_errors(self.path):
            n = self.table.append(columns)
            if commit_now:
                commit(self.path, self.table.metadata())
        return n


def read_decisions(dataset: str | Path) -> dict[str, np.ndarray]:
    """The committed decisions as columns (empty dict when none were made)."""
    root = zarr.open_group(store=LocalStore(Path(dataset), read_only=True), mode="r", use_consolidated=True)
    if GROUP not in root:
        return {}
    return {name: arr[:] for name, arr in root[GROUP].arrays()}


def decisions_csv(dataset: str | Path) -> str:
    """CSV: ``frame_start,frame_end,detected,action``, one column per detector score, then the
    attribution: ``changed``, ``summary`` and the estimates (``dose_ratio``, ``defocus_A``, …)."""
    cols = read_decisions(dataset)
    scores = sorted(k for k in cols if k.startswith("score_"))
    attrs = sorted(k for k in cols if k.startswith("attr_"))
    texts = [k for k in ("changed", "summary") if k in cols]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            *HEADER,
            *(s.removeprefix("score_") for s in scores),
            *texts,
            *(a.removeprefix("attr_") for a in attrs),
        ]
    )
    for i in range(len(cols.get("frame_start", []))):
        writer.writerow(
            [
                int(cols["frame_start"][i]),
                int(cols["frame_end"][i]),
                str(bool(cols["detected"][i])).lower(),
                str(cols["action"][i]),
                *(f"{float(cols[s][i]):.4g}" for s in scores),
                *(str(cols[t][i]) for t in texts),
                *("" if not np.isfinite(cols[a][i]) else f"{float(cols[a][i]):.4g}" for a in attrs),
            ]
        )
    return out.getvalue()


class MonitorWriter:
    """Keeps the drift monitor's state in the ``drift_monitor`` group, batch after batch, cheaply.

    The state grows by appends between re-references (the reference's observations,
    ``history_*``, gain the batch's rows) and its window (``recent_*``) slides. Deleting and
    re-creating the group each batch cost ~22 ms idle (at load ~9: zarr's recursive delete 61 ms,
    creating 7 arrays 12.5, writing them 6.4, the whole consolidation 5.6; 2026-11-30). Here each array is an appendable column (``Table``) of a *generation*
    subgroup ``drift_monitor/g<k>``: a state that extends the stored one appends its new rows
    (invisible until the commit, trimmed if the batch fails, as every column's); any other
    change (a re-reference, a new array, another writer's state) writes a new generation,
    invisible until the commit publishes the group's attributes naming it. The window and 0-d
    arrays, small, are kept in those attributes as JSON. So a reader of the committed metadata
    reads the committed state only: never a generation being written, nor rows of a batch in
    flight. The generation before the current one is kept (a reader that opened the previous
    commit may still read it); older ones are removed at the next new generation.

    ``root``: the write handle of a ``Dataset`` that owns the state (the caller holds the
    writers' lock around ``write`` and its commit).
    """

    def __init__(self, dataset: str | Path, root: zarr.Group) -> None:
        self.path = Path(dataset)
        self.root = root
        self._generation: str | None = None  # written by this writer (none yet: start a new one)
        self._tables: dict[str, Table] = {}
        self._stored: dict[str, np.ndarray] = {}  # each column's rows as written (to see an extension)
        self.drop: list[str] = []  # nodes the next commit removes from the committed metadata

    def write(self, attrs: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Write the state; returns the nodes' metadata the commit publishes (path → metadata,
        None: read from its ``zarr.json``)."""
        columns = {k: np.asarray(v) for k, v in arrays.items() if not _inline(k, np.asarray(v))}
        inline = {k: _to_json(np.asarray(v)) for k, v in arrays.items() if k not in columns}
        with storage_errors(self.path):
            if not self._extends(columns):
                self._new_generation(columns)
            else:
                for name, value in columns.items():
                    n = len(self._stored[name])
                    if len(value) > n:
                        self._tables[name].append({name: value[n:]})
                        self._stored[name] = value.copy()
            meta = {
                "attributes": {**dict(attrs), STORED: {"generation": self._generation, "inline": inline}},
                "zarr_format": 3,
                "node_type": "group",
            }
            # The group's own metadata too (a plain zarr open without consolidation reads it);
            # not a reader's commit point: the consolidated copy is.
            atomic_write(self.path / MONITOR_GROUP / "zarr.json", json_bytes(meta))
        entries: dict[str, Any] = {MONITOR_GROUP: consolidated_entry(meta)}
        if self._fresh:
            entries[f"{MONITOR_GROUP}/{self._generation}"] = consolidated_entry(GROUP_META)
        for table in self._tables.values():
            entries |= table.metadata()
        self._fresh = False
        return entries

    def _extends(self, columns: Mapping[str, np.ndarray]) -> bool:
        """Whether ``columns`` are the stored columns with rows added (or none)."""
        if self._generation is None or columns.keys() != self._stored.keys():
            return False
        for name, value in columns.items():
            old = self._stored[name]
            if (
                value.ndim == 0
                or value.dtype != old.dtype
                or value.shape[1:] != old.shape[1:]
                or len(value) < len(old)
                or not np.array_equal(value[: len(old)], old, equal_nan=value.dtype.kind in "fc")
            ):
                return False
        return True

    def _new_generation(self, columns: Mapping[str, np.ndarray]) -> None:
        group = self.root.require_group(MONITOR_GROUP)
        self.drop = []
        previous = (self._committed() or {}).get("generation")
        children = [p.name for p in (self.path / MONITOR_GROUP).iterdir() if p.is_dir()]
        numbers = [int(c[1:]) for c in children if c[:1] == "g" and c[1:].isdigit()]
        # Everything else under the group goes: older generations (no committed state names
        # them), arrays of the layout before generations, debris of a killed writer.
        for child in children:
            if child != previous:
                shutil.rmtree(self.path / MONITOR_GROUP / child)
                self.drop.append(f"{MONITOR_GROUP}/{child}")
        self._generation = f"g{max(numbers, default=0) + 1}"
        sub = group.create_group(self._generation)
        self._tables = {name: Table(sub, f"{name}_row", rows=ROW_CHUNK // 8) for name in columns}
        for name, value in columns.items():
            self._tables[name].append({name: value})
        self._stored = {name: value.copy() for name, value in columns.items()}
        self._fresh = True

    def _committed(self) -> dict[str, Any] | None:
        """The state's bookkeeping as last committed (None without a committed state)."""
        root = json.loads((self.path / "zarr.json").read_bytes())
        entry = ((root.get("consolidated_metadata") or {}).get("metadata") or {}).get(MONITOR_GROUP)
        return None if entry is None else (entry.get("attributes") or {}).get(STORED)

    _fresh = False


def _inline(name: str, value: np.ndarray) -> bool:
    # The window slides every batch (no extension), and is a few rows of a few features.
    return name.startswith("recent_") or value.ndim == 0


def _to_json(value: np.ndarray) -> dict[str, Any]:
    """An array as JSON: dtype, shape and values (non-finite floats spelled as zarr spells fill
    values), exact for floats (``repr`` round-trips)."""
    flat = value.ravel().tolist()
    if value.dtype.kind == "f":
        flat = [
            v if np.isfinite(v) else ("NaN" if np.isnan(v) else "Infinity" if v > 0 else "-Infinity")
            for v in flat
        ]
    return {"dtype": value.dtype.str, "shape": list(value.shape), "values": flat}


def _from_json(doc: Mapping[str, Any]) -> np.ndarray:
    dtype = np.dtype(doc["dtype"])
    values = [fill_from_json(v, dtype) for v in doc["values"]] if dtype.kind == "f" else doc["values"]
    return np.array(values, dtype=dtype).reshape(doc["shape"])


def state_of(group: zarr.Group) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(attrs, arrays) of a committed ``drift_monitor`` group (read through consolidated metadata)."""
    attrs = dict(group.attrs)
    stored = attrs.pop(STORED, None)
    if stored is None:  # the layout before generations: the arrays in the group itself
        return attrs, {name: arr[...] for name, arr in group.arrays()}
    arrays = {name: _from_json(doc) for name, doc in stored["inline"].items()}
    arrays |= {name: arr[...] for name, arr in group[stored["generation"]].arrays()}
    return attrs, arrays


def read_monitor_state(dataset: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """The committed monitor state (attrs, arrays), or None when no run stored one."""
    root = zarr.open_group(store=LocalStore(Path(dataset), read_only=True), mode="r", use_consolidated=True)
    if MONITOR_GROUP not in root:
        return None
    return state_of(root[MONITOR_GROUP])
