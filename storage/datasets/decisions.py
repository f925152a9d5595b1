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
continues where this one stopped (``write_monitor_state`` / ``read_monitor_state``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.storage import LocalStore

from .tables import Table, commit, open_root, storage_errors, writing

GROUP = "drift"
MONITOR_GROUP = "drift_monitor"
DIM = "decision"
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
                commit(self.path)
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


def write_monitor_state(
    dataset: str | Path,
    attrs: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    root: zarr.Group | None = None,
) -> None:
    """Replace the stored monitor state (JSON ``attrs`` and arrays); visible at the next commit.

    ``attrs["frames_seen"]`` must be the first frame not yet decided: a reader checks it against
    the decisions, so a state left by a run killed between the two writes is recognised as stale.
    """
    path = Path(dataset)
    root = root if root is not None else open_root(path, create=False)
    with storage_errors(path):
        if MONITOR_GROUP in root:
            del root[MONITOR_GROUP]
        group = root.create_group(MONITOR_GROUP, attributes=dict(attrs))
        for name, value in arrays.items():
            arr = np.asarray(value)
            stored = group.create_array(
                name, shape=arr.shape, dtype=arr.dtype, chunks=tuple(max(1, n) for n in arr.shape) or None
            )
            if arr.size:
                stored[...] = arr


def read_monitor_state(dataset: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """The committed monitor state (attrs, arrays), or None when no run stored one."""
    root = zarr.open_group(store=LocalStore(Path(dataset), read_only=True), mode="r", use_consolidated=True)
    if MONITOR_GROUP not in root:
        return None
    group = root[MONITOR_GROUP]
    return dict(group.attrs), {name: arr[...] for name, arr in group.arrays()}
