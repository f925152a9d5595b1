"""Per-batch drift decisions from three label-free detectors, with re-referencing after a change.

The monitor takes each batch's encoder embeddings, per-frame ensemble disagreement and
physics proxies. The first ``reference_frames`` frames (and again the first ones after
every detected change) calibrate the detectors; after that each batch gets a decision with
each detector's score as a multiple of its threshold (> 1 means that detector fired).
The three thresholds share the user's ERT (each is set to three times it), so the whole
monitor raises about one false alarm per ERT frames on a stationary stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .detectors import MeanShiftDetector, MMDDetector
from .physics import Proxies, median_proxies, proxy_score

DETECTORS = ("mmd", "disagreement", "physics")


@dataclass(frozen=True)
class Decision:
    """What the monitor concluded about frames ``frame_start``..``frame_end`` (inclusive)."""

    frame_start: int
    frame_end: int
    detected: bool
    scores: dict[str, float]
    first_alarm: int | None = None  # frame at which a detector first fired

    def fired(self) -> list[str]:
        """Names of the detectors over their threshold."""
        return [k for k, v in self.scores.items() if np.isfinite(v) and v > 1.0]


@dataclass
class DriftMonitor:
    """Online drift detection over the frame stream; ``ert`` in frames, ``window`` in frames."""

    ert: float = 1000.0
    window: int = 10
    reference_frames: int = 64
    seed: int = 0
    mmd: MMDDetector = field(init=False)
    disagreement: MeanShiftDetector = field(init=False)
    physics: MeanShiftDetector = field(init=False)
    reference_proxies: Proxies | None = field(default=None, init=False)
    _pending: list[tuple[np.ndarray, float, Proxies]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        per_detector = self.ert * len(DETECTORS)
        self.mmd = MMDDetector(per_detector, self.window, self.seed)
        self.disagreement = MeanShiftDetector(per_detector, self.window, self.seed + 1)
        self.physics = MeanShiftDetector(per_detector, self.window, self.seed + 2)

    @property
    def calibrated(self) -> bool:
        """Whether the detectors hold a reference (False while one is being collected)."""
        return self.mmd.ready

    def rereference(self) -> None:
        """Forget the reference: the next ``reference_frames`` frames become the new one."""
        for det in (self.mmd, self.disagreement, self.physics):
            det.threshold = np.inf
        self._pending.clear()
        self.reference_proxies = None

    def _calibrate(self) -> None:
        emb = np.stack([e for e, _, _ in self._pending])
        unc = np.array([u for _, u, _ in self._pending])
        self.reference_proxies = median_proxies([p for _, _, p in self._pending])
        phys = np.array([proxy_score(p, self.reference_proxies) for _, _, p in self._pending])
        self.mmd.fit(emb)
        self.disagreement.fit(unc)
        self.physics.fit(phys)
        # Prime the windows with the end of the reference so the first decisions are full-window.
        for e, u, s in zip(emb[-self.window :], unc[-self.window :], phys[-self.window :], strict=True):
            self.mmd.update(e)
            self.disagreement.update(u)
            self.physics.update(s)
        self._pending.clear()

    def physics_score(self, proxies: Proxies) -> float:
        """A frame's proxy deviation from the reference (NaN while uncalibrated)."""
        return (
            float("nan") if self.reference_proxies is None else proxy_score(proxies, self.reference_proxies)
        )

    def observe(
        self, frame_start: int, embeddings: np.ndarray, uncertainty: np.ndarray, proxies: list[Proxies]
    ) -> Decision:
        """Feed one batch (per-frame embeddings (k, d), mean per-atom uncertainty (k,), proxies)."""
        k = len(embeddings)
        if not self.calibrated:
            self._pending.extend(
                zip(np.asarray(embeddings), np.asarray(uncertainty, float), proxies, strict=True)
            )
            if len(self._pending) >= self.reference_frames:
                self._calibrate()
            return Decision(frame_start, frame_start + k - 1, False, dict.fromkeys(DETECTORS, float("nan")))
        best = dict.fromkeys(DETECTORS, 0.0)
        first_alarm = None
        for i in range(k):
            values = {
                "mmd": self.mmd.update(embeddings[i]) / self.mmd.threshold,
                "disagreement": self.disagreement.update(float(uncertainty[i])) / self.disagreement.threshold,
                "physics": self.physics.update(self.physics_score(proxies[i])) / self.physics.threshold,
            }
            for name, v in values.items():
                if np.isfinite(v):
                    best[name] = max(best[name], v)
            if first_alarm is None and any(np.isfinite(v) and v > 1.0 for v in values.values()):
                first_alarm = frame_start + i
        detected = first_alarm is not None
        return Decision(frame_start, frame_start + k - 1, detected, best, first_alarm)
