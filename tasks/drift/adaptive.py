"""The edge's adaptive ensemble: detect drift per batch, select members, escalate to retraining.

Per batch: the active members locate the columns; the monitor scores the batch on encoder
features (averaged over the active members, so the feature space does not depend on how
many are active), ensemble disagreement, physics proxies and the frames' spectra. On a detection, an ensemble
of specialists makes the members of the regime its frames vote for (``regimes``, against the
regime statistics stored with the model) active;
otherwise the members are scored one by one on the batch and the fitting subset becomes
active. If the physics proxies of the active members' columns are back within the
reference's bounds the action is ``select``, else ``retrain`` (the caller dispatches it).
After any detection the monitor takes a new reference under the new conditions, and the
check keeps only the frames from the first alarm on (``CheckContext``: a frame too faint to
show its crystal alone is judged with the run's frames before it, so that the answer does not
depend on the batch size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scopeflow.atoms import Atoms
from tasks.inference.ensemble import Ensemble, Outputs
from tasks.inference.verify import CheckContext

from .monitor import Decision, DriftMonitor
from .physics import frame_proxies
from .regimes import RegimeStatistics, regime_vote
from .selection import Selection, select_members, select_regime
from .spectrum import image_stats


@dataclass(frozen=True)
class BatchOutcome:
    """One batch: its columns (from the members in use), the decision and what was done."""

    start: int
    atoms: list[Atoms]
    decision: Decision
    action: str  # none | select | retrain
    members: tuple[int, ...]  # members in use from the next batch on
    model_version: str
    selection: Selection | None = None


def _mean_features(features: np.ndarray, members: int) -> np.ndarray:
    n = features.shape[0]
    return features.reshape(n, members, -1).mean(axis=1)


class AdaptiveEnsemble:
    """A production ensemble whose active members follow the imaging conditions."""

    def __init__(
        self,
        ensemble: Ensemble,
        monitor: DriftMonitor,
        min_members: int = 2,
        regime_statistics: Mapping[str, RegimeStatistics] | None = None,
    ) -> None:
        self.monitor = monitor
        self.min_members = min_members
        # The run's recent frames, pooled with each batch's by the check (``verify.pooled``).
        self.context = CheckContext()
        self.use(ensemble, regime_statistics)

    def use(
        self, ensemble: Ensemble, regime_statistics: Mapping[str, RegimeStatistics] | None = None
    ) -> None:
        """Switch to a (new) production ensemble: all members active, a fresh reference.
        ``regime_statistics``: the signatures of its regimes' training frames (from its manifest)."""
        self.ensemble = ensemble
        self.regime_statistics = dict(regime_statistics or {})
        self.members: tuple[int, ...] = tuple(range(ensemble.members))
        self.threshold: float | None = None  # the active members' heatmap threshold (None: the model's)
        self.active = ensemble
        self.monitor.rereference()

    def process(self, frames: Sequence[np.ndarray], pixel_sizes: Sequence[float], start: int) -> BatchOutcome:
        """Columns of a batch of frames (dataset positions ``start``…) and the drift decision."""
        frames = [np.asarray(f) for f in frames]
        pixel_sizes = [float(p) for p in pixel_sizes]
        atoms, features = self.active.analyse(frames, list(pixel_sizes), self.context)
        # The frames held are named by their dataset positions: a restarted run reads them again.
        positions = list(range(start, start + len(frames)))
        self.context.name(frames, positions)
        proxies = [
            frame_proxies(a.rowcol, f.shape, p) for a, f, p in zip(atoms, frames, pixel_sizes, strict=True)
        ]
        uncertainty = np.array([float(np.mean(a.uncertainty)) if len(a) else np.nan for a in atoms])
        decision = self.monitor.observe(
            start, _mean_features(features, len(self.members)), uncertainty, proxies, frames, pixel_sizes
        )
        version = self.ensemble.version
        if not decision.detected:
            return BatchOutcome(start, atoms, decision, "none", self.members, version)
        # Choose on the frames from the first alarm on: the batch may begin under the old conditions.
        since = decision.first_alarm - start if decision.first_alarm is not None else 0
        recent = slice(since if 0 <= since < len(frames) else 0, None)
        # The conditions changed: the frames before must not confirm a crystal in those after
        # (the check's pooled spectra); those from the first alarm on are under the new ones.
        self.context.clear()
        self.context.add(frames[recent], pixel_sizes[recent], positions[recent])
        # One pass of every member over these frames serves both the choice and its check.
        outputs = self.ensemble.outputs(frames[recent], pixel_sizes[recent])
        selection = self._select(frames[recent], pixel_sizes[recent], atoms[recent], outputs)
        self.members = selection.members
        # A regime that stores its own decoder threshold decodes at it from now on (and its
        # check below too); a consensus selection keeps the model's.
        self.threshold = selection.threshold
        self.active = self.ensemble.select(list(self.members), threshold=self.threshold)
        restored = self._restored(frames[recent], pixel_sizes[recent], outputs)
        self.monitor.rereference()
        action = "select" if restored else "retrain"
        return BatchOutcome(start, atoms, decision, action, self.members, version, selection)

    def _select(
        self,
        frames: list[np.ndarray],
        pixel_sizes: Sequence[float],
        consensus: list[Atoms],
        outputs: Outputs,
    ) -> Selection:
        p = float(np.median(pixel_sizes))
        by_regime = self._select_regime(frames, p, consensus)
        if by_regime is not None:
            return by_regime
        per_member = [
            [a.rowcol for a in self.ensemble.atoms_of(outputs, [k])] for k in range(self.ensemble.members)
        ]
        reference = self.monitor.reference_proxies
        return select_members(
            per_member,
            [a.rowcol for a in consensus],
            frames[0].shape,
            p,
            reference,
            min_members=self.min_members,
        )

    def _select_regime(self, frames: list[np.ndarray], p: float, consensus: list[Atoms]) -> Selection | None:
        """The specialists of the regime the frames vote for (None: no specialists or no stored
        statistics for them, or the vote is for the standard conditions)."""
        regimes = self.ensemble.config.regimes
        known = {
            name: self.regime_statistics[name]
            for name in dict.fromkeys(regimes)
            if name in self.regime_statistics
        }
        if not any(not r.standard for r in known.values()):
            return None
        vote = regime_vote([image_stats(f, p) for f in frames], known)
        standard = [name for name, r in known.items() if r.standard]
        return select_regime(
            regimes, vote, standard, thresholds={name: r.threshold for name, r in known.items()}
        )

    def _restored(self, frames: list[np.ndarray], pixel_sizes: Sequence[float], outputs: Outputs) -> bool:
        """Whether the selected members' columns look like the reference lattice again."""
        atoms = self.ensemble.atoms_of(outputs, self.members, threshold=self.threshold)
        proxies = [
            frame_proxies(a.rowcol, f.shape, p) for a, f, p in zip(atoms, frames, pixel_sizes, strict=True)
        ]
        return self.monitor.physics_shift(proxies) <= 1.0
