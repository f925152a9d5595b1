"""How the edge loop and the re-analysis cut a dataset into batches, and what one batch reports.

One batching for both: contiguous runs of frame positions still to do, at most ``size`` frames
each. One report type for both: the edge loop's reports add the drift decision (``outcome``),
the adoption of a newly promoted model and the escalation to retraining.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from scopeflow.atoms import Atoms

from .metrics import Scores


def contiguous_batches(todo: Iterable[int], size: int) -> list[tuple[int, int]]:
    """Contiguous runs of frame positions still to do, cut into [start, stop) batches of at most ``size``."""
    out: list[tuple[int, int]] = []
    for i in todo:
        if out and out[-1][1] == i and i - out[-1][0] < size:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


@dataclass
class BatchReport:
    """One batch as written: frame positions [start, stop), atoms per frame, the model version
    that found them, seconds it took and the scores against truth (None without truth)."""

    start: int
    stop: int
    atoms: list[Atoms]
    model_version: str
    seconds: float
    scores: Scores | None = None
    outcome: Any = None  # the edge: tasks.drift.adaptive.BatchOutcome (decision, action, members)
    adopted: str | None = None  # the edge: a newly promoted version taken up before this batch
    escalation: Any = None  # the edge: tasks.drift.edge_loop.Escalation, when retraining is needed
    retrain: Any = None  # what the caller's retraining dispatch returned for the escalation

    @property
    def atom_count(self) -> int:
        """Atom columns found in the batch."""
        return sum(len(a) for a in self.atoms)

    @property
    def mean_uncertainty(self) -> float:
        """Mean uncertainty of the batch's columns (NaN when none were found)."""
        values = [a.uncertainty for a in self.atoms if len(a)]
        return float(np.concatenate(values).mean()) if values else float("nan")
