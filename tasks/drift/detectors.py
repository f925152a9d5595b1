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

import numpy as np

from scopeflow.errors import InputError

from .calibration import autocorrelation_inflation, simulate_statistics, threshold_for_ert

MIN_REFERENCE = 16


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


@dataclass
class MMDDetector:
    """MMD² between a reference set and a sliding window of embeddings; threshold set by ERT (frames)."""

    ert: float = 1000.0
    window: int = 10
    seed: int = 0
    threshold: float = field(default=np.inf, init=False)
    _ref: np.ndarray = field(default_factory=lambda: np.empty((0, 0)), init=False, repr=False)
    _gamma: float = field(default=1.0, init=False)
    _kaa: float = field(default=0.0, init=False)
    _recent: deque = field(default_factory=deque, init=False, repr=False)

    @property
    def ready(self) -> bool:
        """Calibrated and holding a reference."""
        return np.isfinite(self.threshold)

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

        length = int(min(max(3 * self.ert, 300), 6000))
        stats = simulate_statistics(stat, len(pool), self.window, length, streams=64, rng=rng)
        # MMD² scales with the variance of the window mean, so it takes the whole inflation.
        self.threshold = threshold_for_ert(stats, self.ert) * autocorrelation_inflation(reference)
        self._recent.clear()
        return self

    def update(self, embedding: np.ndarray) -> float:
        """Add one frame's embedding; the MMD² of the current window (NaN until it is full)."""
        self._recent.append(np.asarray(embedding, dtype=np.float64))
        while len(self._recent) > self.window:
            self._recent.popleft()
        if len(self._recent) < self.window or not self.ready:
            return float("nan")
        w = np.stack(self._recent)
        kww = self._k(w, w)
        n = len(w)
        within = (kww.sum() - np.trace(kww)) / (n * (n - 1))
        return float(within - 2.0 * self._k(self._ref, w).mean() + self._kaa)


@dataclass
class MeanShiftDetector:
    """|window mean - reference mean| / reference spread of a scalar per-frame score."""

    ert: float = 1000.0
    window: int = 10
    seed: int = 0
    threshold: float = field(default=np.inf, init=False)
    _mu: float = field(default=0.0, init=False)
    _sd: float = field(default=1.0, init=False)
    _recent: deque = field(default_factory=deque, init=False, repr=False)

    @property
    def ready(self) -> bool:
        """Calibrated and holding a reference."""
        return np.isfinite(self.threshold)

    def fit(self, reference: np.ndarray) -> MeanShiftDetector:
        """Calibrate on reference scores (n,)."""
        reference = np.asarray(reference, dtype=np.float64).ravel()
        reference = reference[np.isfinite(reference)]
        if len(reference) < MIN_REFERENCE:
            raise InputError(f"reference needs ≥ {MIN_REFERENCE} finite scores, got {len(reference)}")
        self._mu = float(np.median(reference))
        # A robust spread: one outlier frame in the reference must not blind the detector.
        self._sd = float(max(1.4826 * np.median(np.abs(reference - self._mu)), 1e-9, 0.05 * abs(self._mu)))
        z = (reference - self._mu) / self._sd
        rng = np.random.default_rng(self.seed)

        def stat(idx: np.ndarray) -> np.ndarray:
            return np.abs(z[idx].mean(axis=1))

        length = int(min(max(3 * self.ert, 300), 6000))
        stats = simulate_statistics(stat, len(z), self.window, length, streams=64, rng=rng)
        # A standardised mean scales with the standard deviation: the square root of the inflation.
        self.threshold = threshold_for_ert(stats, self.ert) * np.sqrt(autocorrelation_inflation(reference))
        self._recent.clear()
        return self

    def shift(self, scores: Sequence[float]) -> float:
        """The standardised mean shift of ``scores`` (compare with ``threshold``)."""
        return abs(float(np.nanmean(scores)) - self._mu) / self._sd

    def update(self, score: float) -> float:
        """Add one frame's score; the window's standardised mean shift (NaN until full)."""
        if np.isfinite(score):
            self._recent.append(float(score))
        while len(self._recent) > self.window:
            self._recent.popleft()
        if len(self._recent) < self.window or not self.ready:
            return float("nan")
        return abs(float(np.mean(self._recent)) - self._mu) / self._sd
