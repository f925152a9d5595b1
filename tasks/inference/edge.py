"""Edge inference over a dataset: frames in batches → atoms (and features) → the dataset.

Plain Python, one fixed model and no drift monitoring; the edge flow runs the drift-aware
loop in ``tasks.drift.edge_loop`` instead. Frames already in the model version's prediction set are
skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from storage.datasets import open_dataset, read_truth
from storage.datasets.predictions import PredictionWriter

from .ensemble import Ensemble
from .metrics import Scores, evaluate


@dataclass
class EdgeBatch:
    """What one batch produced: frame positions [start, stop), atoms, features, F1 when truth exists."""

    start: int
    stop: int
    atoms: int
    seconds: float
    scores: Scores | None = None
    features: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    errors: np.ndarray = field(default_factory=lambda: np.zeros(0))


def infer_batch(
    ds: xr.Dataset, ensemble: Ensemble, writer: PredictionWriter, start: int, stop: int
) -> EdgeBatch:
    """Locate the atoms of frames ``start``..``stop``-1, write them, score them against any truth."""
    t0 = time.perf_counter()
    frames = ds["frames"].isel(frame=slice(start, stop)).values
    pixel_sizes = ds["pixel_size"].isel(frame=slice(start, stop)).values
    atoms, features = ensemble.analyse(list(frames), list(pixel_sizes))
    positions = list(range(start, stop))
    written = writer.append(positions, atoms)
    scores = None
    truths = [read_truth(ds, i) for i in positions]
    if all(t is not None for t in truths) and "truth_frame" in ds:
        scores = evaluate([a.rowcol for a in atoms], [t.rowcol for t in truths], list(pixel_sizes))
    return EdgeBatch(start, stop, written, time.perf_counter() - t0, scores, features)


def contiguous_batches(todo: list[int], size: int) -> list[tuple[int, int]]:
    """Contiguous runs of frame positions still to do, cut into [start, stop) batches of at most ``size``."""
    out: list[tuple[int, int]] = []
    for i in todo:
        if out and out[-1][1] == i and i - out[-1][0] < size:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


RunBatch = Callable[[xr.Dataset, Ensemble, PredictionWriter, int, int], EdgeBatch]


def run_edge(
    dataset: str | Path,
    ensemble: Ensemble,
    batch_size: int = 32,
    *,
    on_batch: Callable[[EdgeBatch], None] | None = None,
    run_batch: RunBatch = infer_batch,
) -> dict[str, Any]:
    """Run ``ensemble`` over the dataset's frames not yet predicted; returns a summary.

    The summary holds the model version, frames processed now and in all, atoms found, and
    — when the dataset carries ground truth — precision, recall, F1 (match within 0.5 Å)
    and the median error in px over the frames processed now.
    """
    path = Path(dataset)
    ds = open_dataset(path)
    n = int(ds.sizes.get("frame", 0))
    writer = PredictionWriter.open(path, ensemble.version, attrs={"config": ensemble.config.as_dict()})
    done = set(writer.done().tolist())
    todo = [i for i in range(n) if i not in done]
    batches = contiguous_batches(todo, batch_size)
    t0 = time.perf_counter()
    atoms = 0
    tp = fp = fn = 0
    medians: list[tuple[float, int]] = []
    for start, stop in batches:
        result = run_batch(ds, ensemble, writer, start, stop)
        atoms += result.atoms
        if result.scores is not None:
            tp += result.scores.true_positives
            fp += result.scores.false_positives
            fn += result.scores.false_negatives
            medians.append((result.scores.median_error, result.scores.true_positives))
        if on_batch is not None:
            on_batch(result)
    seconds = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "dataset": str(path.resolve()),
        "model_version": ensemble.version,
        "members": ensemble.members,
        "frames": n,
        "frames_processed": len(todo),
        "atoms": atoms,
        "seconds": seconds,
        "frames_per_second": len(todo) / seconds if seconds > 0 and todo else 0.0,
    }
    if medians:
        scores = Scores(
            tp, fp, fn, float(np.average([m for m, _ in medians], weights=[max(w, 1) for _, w in medians]))
        )
        summary["truth"] = scores.as_dict()
        summary["f1"] = scores.f1
    return summary
