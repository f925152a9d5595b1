"""Per-batch drift decisions from three label-free detectors, with re-referencing after a change.

The monitor takes each batch's encoder embeddings, per-frame ensemble disagreement and
physics proxies. The first ``reference_frames`` frames (and again the first ones after
every detected change) calibrate the detectors, and they are calibrated again on all the
quiet frames since then when those reach 2× and 4× as many: a short reference sees little
of a stationary stream's slow wander, a longer one more (a drift slower than that is
absorbed, not detected); after that each batch gets a decision with
each detector's score as a multiple of its threshold (> 1 means that detector fired).
The three thresholds share the user's ERT (each is set to three times it), so the whole
monitor raises about one false alarm per ERT frames on a stationary stream; each also has a
smallest shift worth an alarm (``MIN_SHIFT``), in its own units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .detectors import EmbeddingDetector, MeanShiftDetector
from .physics import Proxies, median_proxies, proxy_score

DETECTORS = ("embedding", "disagreement", "physics")
# The smallest window-mean change worth an alarm, per detector: embedding novelty (0 like the
# reference, 1 unlike it), mean per-atom spread of the members' heatmaps (0-0.5), and the
# physics proxy deviation (~1 per 100% change of column density or spacing). On the twin's
# stationary streams the window means wander by under a third of these; the drifts that cost
# the network F1 move them several times further (benchmarks/drift.py).
MIN_SHIFT = {"embedding": 0.5, "disagreement": 0.02, "physics": 0.1}
# Or this fraction of the reference level, if more: where the network half fails, its spread
# and proxies wander with the content by as much as their level (seen on the twin at
# source size 0.8 Å: mean spread 0.03-0.10 in one stationary stretch).
RELATIVE_SHIFT = {"disagreement": 1.0, "physics": 0.5}
REFERENCE_GROWTH = (1, 2, 4)  # calibrate at these multiples of ``reference_frames``


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
    min_shift: dict[str, float] = field(default_factory=lambda: dict(MIN_SHIFT))
    embedding: EmbeddingDetector = field(init=False)
    disagreement: MeanShiftDetector = field(init=False)
    physics: MeanShiftDetector = field(init=False)
    reference_proxies: Proxies | None = field(default=None, init=False)
    # Quiet frames since the last re-reference (embedding, uncertainty, proxies), time order.
    _history: list[tuple[np.ndarray, float, Proxies]] = field(default_factory=list, init=False, repr=False)

    @property
    def _checkpoints(self) -> tuple[int, ...]:
        return tuple(self.reference_frames * m for m in REFERENCE_GROWTH)

    def __post_init__(self) -> None:
        per_detector = self.ert * len(DETECTORS)
        floor = {**MIN_SHIFT, **self.min_shift}
        self.embedding = EmbeddingDetector(per_detector, self.window, self.seed, min_shift=floor["embedding"])
        self.disagreement = MeanShiftDetector(
            per_detector, self.window, self.seed + 1, floor["disagreement"], RELATIVE_SHIFT["disagreement"]
        )
        self.physics = MeanShiftDetector(
            per_detector, self.window, self.seed + 2, floor["physics"], RELATIVE_SHIFT["physics"]
        )

    @property
    def calibrated(self) -> bool:
        """Whether the detectors hold a reference (False while one is being collected)."""
        return self.embedding.ready

    def rereference(self) -> None:
        """Forget the reference: the next ``reference_frames`` frames become the new one."""
        for det in (self.embedding, self.disagreement, self.physics):
            det.threshold = np.inf
        self._history.clear()
        self.reference_proxies = None

    def _calibrate(self) -> None:
        emb = np.stack([e for e, _, _ in self._history])
        unc = np.array([u for _, u, _ in self._history])
        self.reference_proxies = median_proxies([p for _, _, p in self._history])
        phys = np.array([proxy_score(p, self.reference_proxies) for _, _, p in self._history])
        self.embedding.fit(emb)
        self.disagreement.fit(unc)
        self.physics.fit(phys)
        # Prime the windows with the end of the reference so the first decisions are full-window.
        for e, u, s in zip(emb[-self.window :], unc[-self.window :], phys[-self.window :], strict=True):
            self.embedding.update(e)
            self.disagreement.update(u)
            self.physics.update(s)

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
        batch = list(zip(np.asarray(embeddings), np.asarray(uncertainty, float), proxies, strict=True))
        if not self.calibrated:
            self._grow(batch)
            return Decision(frame_start, frame_start + k - 1, False, dict.fromkeys(DETECTORS, float("nan")))
        best = dict.fromkeys(DETECTORS, 0.0)
        first_alarm = None
        for i in range(k):
            values = {
                "embedding": self.embedding.update(embeddings[i]) / self.embedding.threshold,
                "disagreement": self.disagreement.update(float(uncertainty[i])) / self.disagreement.threshold,
                "physics": self.physics.update(self.physics_score(proxies[i])) / self.physics.threshold,
            }
            for name, v in values.items():
                if np.isfinite(v):
                    best[name] = max(best[name], v)
            if first_alarm is None and any(np.isfinite(v) and v > 1.0 for v in values.values()):
                first_alarm = frame_start + i
        detected = first_alarm is not None
        if not detected:
            self._grow(batch)
        return Decision(frame_start, frame_start + k - 1, detected, best, first_alarm)

    def _grow(self, batch: list[tuple[np.ndarray, float, Proxies]]) -> None:
        """Add quiet frames to the reference; calibrate when it reaches the next checkpoint."""
        if len(self._history) >= self._checkpoints[-1]:
            return
        before = len(self._history)
        self._history.extend(batch)
        if any(before < c <= len(self._history) for c in self._checkpoints):
            self._calibrate()
