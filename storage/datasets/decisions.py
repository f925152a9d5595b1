"""Drift decisions of a dataset: one row per batch in the ``drift`` subgroup, read back as CSV.

Columns along ``decision``: ``frame_start``, ``frame_end``, ``detected``, ``action``
(``none``, ``select`` or ``retrain``), ``members`` (the ensemble members in use after the
decision, comma-separated), ``model_version``, and one ``score_<detector>`` column per
detector (its statistic as a multiple of its threshold: > 1 fired).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.storage import LocalStore

from .tables import Table, commit, open_root, storage_errors

GROUP = "drift"
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


class DecisionWriter:
    """Appends decisions to a dataset's ``drift`` table; keep one open across batches."""

    def __init__(self, dataset: str | Path) -> None:
        self.path = Path(dataset)
        root = open_root(self.path, create=False)
        with storage_errors(self.path):
            group = root[GROUP] if GROUP in root else root.create_group(GROUP)
        self.table = Table(group, DIM)

    def append(self, rows: Sequence[DecisionRow], *, commit_now: bool = True) -> int:
        """Append decisions; returns the stored count. ``commit_now=False`` leaves the commit to the
        caller (one commit for a batch's predictions and decisions)."""
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
        with storage_errors(self.path):
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
    """CSV: ``frame_start,frame_end,detected,action`` then one column per detector score."""
    cols = read_decisions(dataset)
    scores = sorted(k for k in cols if k.startswith("score_"))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*HEADER, *(s.removeprefix("score_") for s in scores)])
    for i in range(len(cols.get("frame_start", []))):
        writer.writerow(
            [
                int(cols["frame_start"][i]),
                int(cols["frame_end"][i]),
                str(bool(cols["detected"][i])).lower(),
                str(cols["action"][i]),
                *(f"{float(cols[s][i]):.4g}" for s in scores),
            ]
        )
    return out.getvalue()
