"""The drift-aware edge loop over a dataset: infer per batch, decide, select, escalate, adopt.

Plain Python; ``flows/edge.py`` wraps it. Between batches it checks the registry's
``production`` alias and adopts a newly promoted version without restarting; a refused or
failed retraining leaves it on the version it had. Decisions go to the dataset's ``drift``
table, atoms to the prediction set of the version that found them. A rerun resumes after
the last decided frame, with the drift monitor (reference, calibration, window) and the
members in use as the last run left them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow.errors import NotFoundError
from storage.datasets import commit, open_dataset, read_truths
from storage.datasets.decisions import (
    DecisionRow,
    DecisionWriter,
    read_decisions,
    read_monitor_state,
    write_monitor_state,
)
from storage.datasets.predictions import PredictionWriter
from storage.models import ModelRegistry
from tasks.inference.ensemble import Ensemble
from tasks.inference.metrics import Scores, evaluate
from tasks.inference.registry import load_ensemble

from .adaptive import AdaptiveEnsemble, BatchOutcome
from .monitor import DriftMonitor
from .regimes import RegimeStatistics, read_statistics


@dataclass(frozen=True)
class Escalation:
    """Drift that member selection could not absorb: what retraining needs to start."""

    dataset: str
    frame_start: int
    frame_end: int
    members: tuple[int, ...]
    scores: dict[str, float]
    model_version: str
    changed: tuple[str, ...] = ()  # conditions named as changed (``Decision.changed``)
    attribution: dict[str, float] = field(default_factory=dict)  # estimates, physical units
    summary: str = ""


@dataclass
class BatchReport:
    """One batch as the loop saw it (for progress, artifacts and the F1-over-time figure)."""

    outcome: BatchOutcome
    stop: int
    seconds: float
    scores: Scores | None = None
    adopted: str | None = None  # a newly promoted version taken up before this batch
    retrain: Any = None  # what the escalation handler returned


@dataclass
class EdgeState:
    """What a loop keeps between calls: the adaptive ensemble and the open prediction writers
    (opening a writer repairs and commits the dataset: not something to pay every batch)."""

    adaptive: AdaptiveEnsemble
    writers: dict[str, PredictionWriter] = field(default_factory=dict)
    decisions: DecisionWriter | None = None
    next_frame: int | None = None  # first frame not yet decided (read from the dataset once)


@dataclass
class EdgeLoopSettings:
    """Drift monitoring settings: ERT in frames, window in frames, reference length in frames."""

    ert: float = 1000.0
    window: int = 10
    reference_frames: int = 64
    batch_size: int = 16
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


OPTICS = ("voltage_kv", "semiangle_mrad", "cs_mm")  # instrument settings, not drifting conditions


def _resume(dataset: Path, adaptive: AdaptiveEnsemble) -> int:
    """First frame not yet decided; the monitor and the members continue from the stored state."""
    decided = read_decisions(dataset)
    ends = decided.get("frame_end")
    start = 0 if ends is None or len(ends) == 0 else int(ends.max()) + 1
    try:
        stored = read_monitor_state(dataset)
    except (OSError, KeyError, ValueError):
        # A run killed between replacing the state and committing it: start a fresh reference.
        stored = None
    if stored is not None and int(stored[0].get("frames_seen", -1)) == start:
        adaptive.monitor.restore(*stored)
        if str(decided["model_version"][-1]) == adaptive.ensemble.version:
            members = tuple(int(m) for m in str(decided["members"][-1]).split(",") if m)
            if members:
                adaptive.members = members
                adaptive.active = adaptive.ensemble.select(list(members))
    return start


def _optics(ds: Any) -> dict[str, float] | None:
    """The instrument's voltage, aperture and Cs as the dataset records them (None if not)."""
    if "conditions" not in ds or "condition" not in ds.coords:
        return None
    names = [str(n) for n in ds["condition"].values]
    if not {"voltage_kv", "semiangle_mrad"} <= set(names):
        return None
    first = ds["conditions"].isel(frame=0).values
    return {k: float(first[names.index(k)]) for k in OPTICS if k in names}


def run_adaptive_edge(
    dataset: str | Path,
    *,
    registry: ModelRegistry | None = None,
    settings: EdgeLoopSettings | None = None,
    escalate: Callable[[Escalation], Any] | None = None,
    on_batch: Callable[[BatchReport], None] | None = None,
    state: EdgeState | None = None,
    stop_at: int | None = None,
) -> dict[str, Any]:
    """Process the dataset's frames not yet decided; returns a summary with F1 per batch.

    ``escalate`` is called on a ``retrain`` action (a Prefect event in the flow, an
    in-process retraining in the embedded loop); ``state`` is kept across calls when the
    caller processes a growing dataset batch by batch.
    """
    path = Path(dataset)
    settings = settings or EdgeLoopSettings()
    registry = registry or ModelRegistry()
    if state is None:
        state = new_state(load_ensemble("production", registry), settings, registry)
    adaptive = state.adaptive
    ds = open_dataset(path)
    n = int(ds.sizes.get("frame", 0)) if stop_at is None else min(stop_at, int(ds.sizes.get("frame", 0)))
    writers = state.writers
    reports: list[BatchReport] = []
    if state.decisions is None or state.decisions.path != path:
        state.decisions = DecisionWriter(path)
        state.next_frame = _resume(path, adaptive)
        if adaptive.monitor.optics is None and n:
            adaptive.monitor.optics = _optics(ds)
    start = state.next_frame
    while start < n:
        stop = min(start + settings.batch_size, n)
        t0 = time.perf_counter()
        adopted = _adopt_new_production(adaptive, registry)
        frames = list(ds["frames"].isel(frame=slice(start, stop)).values)
        pixel_sizes = [float(p) for p in ds["pixel_size"].isel(frame=slice(start, stop)).values]
        outcome = adaptive.process(frames, pixel_sizes, start)
        version = outcome.model_version
        writer = writers.get(version) or writers.setdefault(
            version,
            PredictionWriter.open(path, version, attrs={"config": adaptive.ensemble.config.as_dict()}),
        )
        writer.append(list(range(start, stop)), outcome.atoms, commit_now=False)
        scores = _score(ds, outcome, start, stop, pixel_sizes)
        d = outcome.decision
        state.decisions.append(
            [
                DecisionRow(
                    d.frame_start,
                    d.frame_end,
                    d.detected,
                    outcome.action,
                    outcome.members,
                    version,
                    d.scores,
                    d.changed,
                    d.summary,
                    d.attribution,
                )
            ],
            commit_now=False,
        )
        write_monitor_state(path, *adaptive.monitor.state())
        commit(path)  # the batch's atoms and its decision become visible together
        state.next_frame = stop
        retrain_result = None
        if outcome.action == "retrain" and escalate is not None:
            first = d.first_alarm if d.first_alarm is not None else d.frame_start
            retrain_result = escalate(
                Escalation(
                    str(path.resolve()),
                    first,
                    d.frame_end,
                    outcome.members,
                    dict(d.scores),
                    version,
                    d.changed,
                    dict(d.attribution),
                    d.summary,
                )
            )
        report = BatchReport(outcome, stop, time.perf_counter() - t0, scores, adopted, retrain_result)
        reports.append(report)
        if on_batch is not None:
            on_batch(report)
        start = stop
    return summarize(path, adaptive, reports)


def new_state(
    ensemble: Ensemble, settings: EdgeLoopSettings, registry: ModelRegistry | None = None
) -> EdgeState:
    """A fresh loop state: all members of ``ensemble`` active, a monitor still to calibrate,
    and the regime statistics stored with the model in ``registry`` (for member selection)."""
    monitor = DriftMonitor(settings.ert, settings.window, settings.reference_frames, settings.seed)
    return EdgeState(
        AdaptiveEnsemble(ensemble, monitor, regime_statistics=_statistics(registry, ensemble.version))
    )


def _statistics(registry: ModelRegistry | None, version: str) -> dict[str, RegimeStatistics]:
    if registry is None:
        return {}
    try:
        return read_statistics(registry.regime_statistics(version))
    except NotFoundError:
        return {}


def _adopt_new_production(adaptive: AdaptiveEnsemble, registry: ModelRegistry) -> str | None:
    current = registry.resolve("production")
    if current == adaptive.ensemble.version:
        return None
    adaptive.use(load_ensemble(current, registry), _statistics(registry, current))
    return current


def _score(ds: Any, outcome: BatchOutcome, start: int, stop: int, pixel_sizes: list[float]) -> Scores | None:
    truths = read_truths(ds, start, stop)
    if truths is None:
        return None
    return evaluate([a.rowcol for a in outcome.atoms], [t.rowcol for t in truths], pixel_sizes)


def monitor_status(monitor: DriftMonitor) -> str:
    """One line on whether the monitor decides yet (a short run may end before it can)."""
    if monitor.calibrated:
        return f"watching: reference of {monitor.calibrated_on} frames, ERT {monitor.ert:g} frames"
    need = monitor.frames_to_calibrate()
    return (
        f"collecting the reference: {len(monitor.history)} of {monitor.reference_frames} frames, "
        f"no drift decisions until {need} more frames arrive (run edge again when they have)"
    )


def summarize(path: Path, adaptive: AdaptiveEnsemble, reports: list[BatchReport]) -> dict[str, Any]:
    """Frames, atoms, speed, detections, actions, adopted versions and F1 (per batch and overall)."""
    frames = sum(r.stop - r.outcome.start for r in reports)
    seconds = sum(r.seconds for r in reports)
    out: dict[str, Any] = {
        "dataset": str(path.resolve()),
        "frames_processed": frames,
        "atoms": int(sum(len(a) for r in reports for a in r.outcome.atoms)),
        "frames_per_second": frames / seconds if seconds > 0 else 0.0,
        "model_version": adaptive.ensemble.version,
        "members": list(adaptive.members),
        "detections": [r.outcome.decision.first_alarm for r in reports if r.outcome.decision.detected],
        "actions": [(r.outcome.start, r.outcome.action) for r in reports if r.outcome.action != "none"],
        "selections": [
            (r.outcome.start, list(r.outcome.members), r.outcome.selection.regime_name)
            for r in reports
            if r.outcome.selection is not None
        ],
        "adopted": [(r.outcome.start, r.adopted) for r in reports if r.adopted],
        "attributions": [
            (r.outcome.decision.first_alarm, r.outcome.decision.summary)
            for r in reports
            if r.outcome.decision.detected
        ],
        "monitor": monitor_status(adaptive.monitor),
        "f1_by_batch": [
            (r.outcome.start, r.scores.f1)
            for r in reports
            if r.scores is not None and np.isfinite(r.scores.f1)
        ],
    }
    scored = [r.scores for r in reports if r.scores is not None]
    if scored:
        tp = sum(s.true_positives for s in scored)
        fp = sum(s.false_positives for s in scored)
        fn = sum(s.false_negatives for s in scored)
        out["f1"] = 2 * tp / max(2 * tp + fp + fn, 1)
    return out
