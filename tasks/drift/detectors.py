"""Online drift detectors over the frame stream, each calibrated to an expected run time (ERT).

- ``MMDDetector``: a two-sample test (maximum mean discrepancy, Gaussian kernel) between
  reference embeddings and the embeddings of the last ``window`` frames.
- ``MeanShiftDetector``: the mean of a scalar per-frame score (ensemble disagreement, a
  physics proxy) over the last ``window`` frames against its reference distribution.

All are label-free: they see encoder features, ensemble spread and atom geometry only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scopeflow.errors import InputError

from .calibration import WindowStat, autocorrelation_inflation, simulate_statistics, threshold_for_ert

MIN_REFERENCE = 16


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


@dataclass
class WindowedDetector:
    """What the detectors share: the last ``window`` frames and an ERT-calibrated threshold."""

    ert: float = 1000.0
    window: int = 10
    seed: int = 0
    threshold: float = field(default=np.inf, init=False)
    _recent: deque = field(default_factory=deque, init=False, repr=False)

    @property
    def ready(self) -> bool:
        """Calibrated and holding a reference."""
        return np.isfinite(self.threshold)

    def _push(self, value: Any) -> bool:
        """Add one frame's value; whether the window is full and the detector calibrated."""
        self._recent.append(value)
        while len(self._recent) > self.window:
            self._recent.popleft()
        return len(self._recent) == self.window and self.ready

    def _calibrate(self, stat: WindowStat, pool_size: int, rng: np.random.Generator, widen: float) -> None:
        """Threshold from simulated stationary streams, widened by ``widen`` for autocorrelation."""
        length = int(min(max(3 * self.ert, 300), 6000))
        stats = simulate_statistics(stat, pool_size, self.window, length, streams=64, rng=rng)
        self.threshold = threshold_for_ert(stats, self.ert) * widen
        self._recent.clear()


@dataclass
class MMDDetector(WindowedDetector):
    """MMD² between a reference set and a sliding window of embeddings; threshold set by ERT (frames)."""

    _ref: np.ndarray = field(default_factory=lambda: np.empty((0, 0)), init=False, repr=False)
    _gamma: float = field(default=1.0, init=False)
    _kaa: float = field(default=0.0, init=False)

    def _k(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-self._gamma * _sq_dists(a, b))

    def fit(self, reference: np.ndarray) -> MMDDetector:
        """Calibrate on reference embeddings (n, d) in time order: half is the reference, half
        simulates streams; the threshold is widened for the reference's autocorrelation."""
        reference = np.asarray(reference, dtype=np.float64)
        if reference.ndim != 2 or len(reference) < MIN_REFERENCE:
            raise InputError(
                f"MMD reference needs ≥ {MIN_REFERENCE} embeddings (n, d), got {reference.shape}"
            )
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(reference))
        ref, pool = reference[order[::2]], reference[order[1::2]]
        d2 = _sq_dists(ref, ref)
        self._gamma = 1.0 / max(np.median(d2[d2 > 0]), 1e-12)  # median heuristic
        self._ref = ref
        self._kaa = float(self._k(ref, ref).mean())
        k_pool = self._k(pool, pool)
        k_ref_pool = self._k(ref, pool).mean(axis=0)

        def stat(idx: np.ndarray) -> np.ndarray:
            w = idx.shape[1]
            kww = k_pool[idx[:, :, None], idx[:, None, :]]
            within = (kww.sum(axis=(1, 2)) - np.trace(kww, axis1=1, axis2=2)) / (w * (w - 1))
            return within - 2.0 * k_ref_pool[idx].mean(axis=1) + self._kaa

        # MMD² scales with the variance of the window mean, so it takes the whole inflation.
        self._calibrate(stat, len(pool), rng, autocorrelation_inflation(reference))
        return self

    def update(self, embedding: np.ndarray) -> float:
        """Add one frame's embedding; the MMD² of the current window (NaN until it is full)."""
        if not self._push(np.asarray(embedding, dtype=np.float64)):
            return float("nan")
        w = np.stack(self._recent)
        kww = self._k(w, w)
        n = len(w)
        within = (kww.sum() - np.trace(kww)) / (n * (n - 1))
        return float(within - 2.0 * self._k(self._ref, w).mean() + self._kaa)


@dataclass
class MeanShiftDetector(WindowedDetector):
    """|window mean - reference mean| / reference spread of a scalar per-frame score."""

    _mu: float = field(default=0.0, init=False)
    _sd: float = field(default=1.0, init=False)

    def fit(self, reference: np.ndarray) -> MeanShiftDetector:
        """Calibrate on reference scores (n,) in time order."""
        reference = np.asarray(reference, dtype=np.float64).ravel()
        reference = reference[np.isfinite(reference)]
        if len(reference) < MIN_REFERENCE:
            raise InputError(f"reference needs ≥ {MIN_REFERENCE} finite scores, got {len(reference)}")
        self._mu = float(np.median(reference))
        # A robust spread: one outlier frame in the reference must not blind the detector.
        self._sd = float(max(1.4826 * np.median(np.abs(reference - self._mu)), 1e-9, 0.05 * abs(self._mu)))
        z = (reference - self._mu) / self._sd

        def stat(idx: np.ndarray) -> np.ndarray:
            return np.abs(z[idx].mean(axis=1))

        # A standardised mean scales with the standard deviation: the square root of the inflation.
        self._calibrate(
            stat, len(z), np.random.default_rng(self.seed), np.sqrt(autocorrelation_inflation(reference))
        )
        return self

    def shift(self, scores: Sequence[float]) -> float:
        """The standardised mean shift of ``scores`` (compare with ``threshold``)."""
        return abs(float(np.nanmean(scores)) - self._mu) / self._sd

    def update(self, score: float) -> float:
        """Add one frame's score; the window's standardised mean shift (NaN until full)."""
        # A frame without a score (no columns found) leaves the window as it was.
        full = (
            self._push(float(score))
            if np.isfinite(score)
            else len(self._recent) == self.window and self.ready
        )
        if not full:
            return float("nan")
        return abs(float(np.mean(self._recent)) - self._mu) / self._sd
