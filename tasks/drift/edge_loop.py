"""The one edge loop over a dataset: infer per batch, decide, select, escalate, adopt.

Plain Python; ``flows/edge.py`` and ``flows/loop.py`` run it one batch per Prefect task. An
``EdgeLoop`` keeps the dataset open across batches (``storage.datasets.Dataset``), writes each
batch's atoms (to the prediction set of the version that found them), its decision and the
drift monitor's state in one commit, and returns what it did as ``BatchReport`` data: a batch
whose drift member selection could not absorb carries an ``Escalation`` and ends the call, so
the caller dispatches retraining before the next batch. ``warm`` makes the network's execution
choice before the first batch (at open on a dataset with frames; ``tasks/drift/pipeline.py``
overlaps acquisition with the loop). Between batches it adopts a newly
promoted ``production`` version without restarting; a refused or failed retraining leaves it on
the version it had. A new loop resumes after the last decided frame, with the drift monitor
(reference, calibration, window), the members in use and the check's context (the run's recent
frames it pools a faint frame with, ``verify.CheckContext``) as the last run left them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow.errors import NotFoundError, ScopeflowError
from scopeflow.settings import EdgeSettings
from storage.datasets import Dataset
from storage.datasets.decisions import DecisionRow
from storage.models import ModelRegistry
from tasks.inference.batching import BatchReport, contiguous_batches
from tasks.inference.ensemble import BATCH, Ensemble
from tasks.inference.metrics import Scores, evaluate
from tasks.inference.registry import load_ensemble

from .adaptive import AdaptiveEnsemble, BatchOutcome
from .monitor import DriftMonitor
from .regimes import RegimeStatistics, read_statistics

log = logging.getLogger(__name__)
# The check's context (``verify.CheckContext.state``) among the drift monitor's stored attrs.
CONTEXT_ATTR = "check_context"
# The active members' heatmap threshold (a selected regime's own; None: the model's), likewise.
THRESHOLD_ATTR = "member_threshold"


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

    @classmethod
    def of(cls, dataset: Path, outcome: BatchOutcome) -> Escalation:
        """The escalation of a batch whose action is ``retrain``, from its first alarm on."""
        d = outcome.decision
        first = d.first_alarm if d.first_alarm is not None else d.frame_start
        return cls(
            str(dataset.resolve()),
            first,
            d.frame_end,
            outcome.members,
            dict(d.scores),
            outcome.model_version,
            d.changed,
            dict(d.attribution),
            d.summary,
        )


class EdgeLoop:
    """The adaptive ensemble over one open dataset, batch after batch (see the module docstring)."""

    def __init__(
        self,
        dataset: str | Path,
        ensemble: Ensemble,
        *,
        registry: ModelRegistry | None = None,
        settings: EdgeSettings | None = None,
    ) -> None:
        self.path = Path(dataset)
        self.settings = settings or EdgeSettings()
        self.registry = registry
        s = self.settings
        monitor = DriftMonitor(s.ert, s.window, s.reference_frames, s.seed)
        self.adaptive = AdaptiveEnsemble(
            ensemble, monitor, regime_statistics=_statistics(registry, ensemble.version)
        )
        # Production as this loop last saw it: a later promotion is adopted, the model asked for kept.
        self._production = registry.resolve("production") if registry is not None else None
        self.data = Dataset(self.path)
        self.next_frame = self._resume()
        if self.data.n_frames:
            last = self.data.n_frames - 1
            self.warm(
                self.data.frames(last, last + 1).shape[1:], float(self.data.pixel_sizes(last, last + 1)[0])
            )

    @classmethod
    def open(
        cls,
        dataset: str | Path,
        model: str = "production",
        *,
        registry: ModelRegistry | None = None,
        settings: EdgeSettings | None = None,
    ) -> EdgeLoop:
        """A loop over ``dataset`` with model ``model`` (alias or version) of ``registry``."""
        registry = registry or ModelRegistry()
        return cls(dataset, load_ensemble(model, registry), registry=registry, settings=settings)

    def warm(self, frame_shape: tuple[int, ...], pixel_size: float) -> None:
        """Choose how the network runs (``tasks.inference.execution``: a trial of its paths, ~1 s
        on the first batch of a shape) for batches of ``frame_shape`` (pixels) at ``pixel_size``
        (Å/px) now, so that no batch's latency pays for it. Cheap when already chosen (one pass
        of a blank batch): the choice is kept per process and architecture."""
        n = min(self.settings.batch_size, BATCH)
        self.adaptive.active.maps(np.zeros((n, *frame_shape), np.float32), pixel_size)

    def _resume(self) -> int:
        """First frame not yet decided; the monitor and the members continue from the stored state."""
        adaptive = self.adaptive
        decided = self.data.decisions()
        ends = decided.get("frame_end")
        start = 0 if ends is None or len(ends) == 0 else int(ends.max()) + 1
        try:
            stored = self.data.monitor_state()
        except (OSError, KeyError, ValueError):
            # A run killed between replacing the state and committing it: start a fresh reference.
            stored = None
        adaptive.context.clear()  # a failed batch's frames are not the committed run's
        if stored is not None and int(stored[0].get("frames_seen", -1)) == start:
            adaptive.monitor.restore(*stored)
            self._restore_context(stored[0].get(CONTEXT_ATTR))
            if str(decided["model_version"][-1]) == adaptive.ensemble.version:
                members = tuple(int(m) for m in str(decided["members"][-1]).split(",") if m)
                if members:
                    adaptive.members = members
                    # The regime's decoder threshold the members were chosen with (None: the model's).
                    adaptive.threshold = stored[0].get(THRESHOLD_ATTR)
                    adaptive.active = adaptive.ensemble.select(list(members), threshold=adaptive.threshold)
        return start

    def _restore_context(self, state: Any) -> None:
        """The check's context as the last run left it (its frames read again from the dataset);
        empty, with a warning, when none was stored or it cannot be restored: the run goes on, and
        its first low-dose batches are judged with fewer frames (``verify.pooled``)."""
        context = self.adaptive.context
        if state is None:
            log.warning("%s: no check context stored with the monitor state: it starts empty", self.path)
            return
        try:
            context.restore(state, lambda ids: [self.data.frames(i, i + 1)[0] for i in ids])
        except (ValueError, OSError, ScopeflowError) as e:
            context.clear()
            log.warning("%s: the stored check context is not usable (%s): it starts empty", self.path, e)

    def advance(self, stop_at: int | None = None, max_batches: int | None = None) -> list[BatchReport]:
        """Process committed frames before ``stop_at`` not yet decided, at most ``max_batches``
        batches; returns their reports ([] when nothing was left). Stops after a batch that
        escalates, so the caller can dispatch retraining before the next one."""
        if stop_at is not None and self.next_frame >= stop_at:
            return []
        # The commit point is reread only when the frames asked for are not known committed yet.
        known = self.data.n_frames
        n = known if stop_at is not None and known >= stop_at else self.data.refresh()
        n = n if stop_at is None else min(stop_at, n)
        if self.adaptive.monitor.optics is None and n:
            self.adaptive.monitor.optics = self.data.optics()
        reports: list[BatchReport] = []
        for start, stop in contiguous_batches(range(self.next_frame, n), self.settings.batch_size):
            if max_batches is not None and len(reports) >= max_batches:
                break
            try:
                report = self._batch(start, stop)
            except BaseException:
                self._reset()
                raise
            reports.append(report)
            if report.escalation is not None:
                break
        return reports

    def _reset(self) -> None:
        """Forget what a failed batch left in memory (the monitor's observations, the writers'
        uncommitted rows): the next call continues from the committed state, so a retried task
        neither repeats nor skips a batch."""
        s, optics = self.settings, self.adaptive.monitor.optics
        self.adaptive.monitor = DriftMonitor(s.ert, s.window, s.reference_frames, s.seed, optics)
        self.data = Dataset(self.path)
        self.next_frame = self._resume()

    def _batch(self, start: int, stop: int) -> BatchReport:
        t0 = time.perf_counter()
        adopted = self._adopt_new_production()
        adaptive = self.adaptive
        pixel_sizes = [float(p) for p in self.data.pixel_sizes(start, stop)]
        outcome = adaptive.process(list(self.data.frames(start, stop)), pixel_sizes, start)
        version = outcome.model_version
        writer = self.data.predictions(version, attrs={"config": adaptive.ensemble.config.as_dict()})
        decisions = self.data.decision_writer
        d = outcome.decision
        row = DecisionRow(
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
        with self.data.batch():  # the batch's atoms, its decision and the monitor state: one commit
            writer.append(list(range(start, stop)), outcome.atoms, commit_now=False)
            decisions.append([row], commit_now=False)
            attrs, arrays = adaptive.monitor.state()
            self.data.write_monitor_state(
                {**attrs, CONTEXT_ATTR: adaptive.context.state(), THRESHOLD_ATTR: adaptive.threshold}, arrays
            )
        self.next_frame = stop
        truths = self.data.truths(start, stop)
        scores = None
        if truths is not None:
            scores = evaluate([a.rowcol for a in outcome.atoms], [t.rowcol for t in truths], pixel_sizes)
        escalation = Escalation.of(self.path, outcome) if outcome.action == "retrain" else None
        return BatchReport(
            start,
            stop,
            outcome.atoms,
            version,
            time.perf_counter() - t0,
            scores,
            outcome,
            adopted,
            escalation,
        )

    def _adopt_new_production(self) -> str | None:
        if self.registry is None:
            return None
        current = self.registry.resolve("production")
        if current in (self._production, self.adaptive.ensemble.version):
            self._production = current
            return None
        self._production = current
        self.adaptive.use(load_ensemble(current, self.registry), _statistics(self.registry, current))
        return current

    def summary(self, reports: list[BatchReport]) -> dict[str, Any]:
        """``summarize`` of ``reports`` with this loop's model, members and monitor."""
        return summarize(self.path, self.adaptive, reports)


def run_adaptive_edge(
    dataset: str | Path,
    *,
    registry: ModelRegistry | None = None,
    settings: EdgeSettings | None = None,
    escalate: Callable[[Escalation], Any] | None = None,
    on_batch: Callable[[BatchReport], None] | None = None,
    loop: EdgeLoop | None = None,
    stop_at: int | None = None,
) -> dict[str, Any]:
    """Process the dataset's frames not yet decided with an ``EdgeLoop``; returns ``summarize``.

    ``escalate`` is called with each ``Escalation`` before the next batch (its return value is
    the report's ``retrain``); ``loop`` is kept across calls by a caller processing a growing
    dataset batch by batch.
    """
    loop = loop or EdgeLoop.open(dataset, registry=registry, settings=settings)
    reports: list[BatchReport] = []
    while batch := loop.advance(stop_at):
        for report in batch:
            if report.escalation is not None and escalate is not None:
                report.retrain = escalate(report.escalation)
            if on_batch is not None:
                on_batch(report)
        reports += batch
    return loop.summary(reports)


def _statistics(registry: ModelRegistry | None, version: str) -> dict[str, RegimeStatistics]:
    if registry is None:
        return {}
    try:
        return read_statistics(registry.regime_statistics(version))
    except NotFoundError:
        return {}


def monitor_status(monitor: DriftMonitor) -> str:
    """One line on whether the monitor decides yet (a short run may end before it can)."""
    monitor.settle()  # a calibration still running in the background counts as done
    if monitor.calibrated:
        return f"watching: reference of {monitor.calibrated_on} frames, ERT {monitor.ert:g} frames"
    need = monitor.frames_to_calibrate()
    # After a detection decisions resume at a shorter reference than at the start.
    first = len(monitor.history) + need
    return (
        f"collecting the reference: {len(monitor.history)} of {first} frames, "
        f"no drift decisions until {need} more frames arrive (run edge again when they have)"
    )


def summarize(path: Path, adaptive: AdaptiveEnsemble, reports: list[BatchReport]) -> dict[str, Any]:
    """Frames, atoms, speed, detections, actions, adopted versions and F1 (per batch and overall)."""
    frames = sum(r.stop - r.start for r in reports)
    seconds = sum(r.seconds for r in reports)
    out: dict[str, Any] = {
        "dataset": str(path.resolve()),
        "frames_processed": frames,
        "atoms": int(sum(r.atom_count for r in reports)),
        "frames_per_second": frames / seconds if seconds > 0 else 0.0,
        "model_version": adaptive.ensemble.version,
        "members": list(adaptive.members),
        "detections": [r.outcome.decision.first_alarm for r in reports if r.outcome.decision.detected],
        "actions": [(r.start, r.outcome.action) for r in reports if r.outcome.action != "none"],
        "selections": [
            (r.start, list(r.outcome.members), r.outcome.selection.regime_name)
            for r in reports
            if r.outcome.selection is not None
        ],
        "adopted": [(r.start, r.adopted) for r in reports if r.adopted],
        "attributions": [
            (r.outcome.decision.first_alarm, r.outcome.decision.summary)
            for r in reports
            if r.outcome.decision.detected
        ],
        "monitor": monitor_status(adaptive.monitor),
        "f1_by_batch": [
            (r.start, r.scores.f1) for r in reports if r.scores is not None and np.isfinite(r.scores.f1)
        ],
    }
    total = Scores.total([r.scores for r in reports if r.scores is not None])
    if total is not None:
        out["f1"] = total.f1
    return out
