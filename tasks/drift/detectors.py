"""Online drift detectors over the frame stream, each calibrated to an expected run time (ERT).

- ``EmbeddingDetector``: a kernel two-sample score between reference encoder embeddings and
  the embeddings of the last ``window`` frames: how much less the recent frames resemble the
  reference than the reference resembles itself (the cross term of the MMD).
- ``MeanShiftDetector``: the mean of a scalar per-frame score (ensemble disagreement, a
  physics proxy) over the last ``window`` frames against its reference distribution.

Both take a ``min_shift``: the smallest change, in the score's own units, worth an alarm.
The ERT bounds how often noise alone raises one; ``min_shift`` keeps the slow wander of a
real stationary stream (the lattice's phase against the pixel grid as the sample drifts,
defects coming into view) from counting as drift when a short reference did not see it.

All are label-free: they see encoder features, ensemble spread and atom geometry only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scopeflow.errors import InputError

from .calibration import WindowStat, simulate_statistics, threshold_for_ert, window_inflation

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

    def restart(self) -> None:
        """Empty the window (after an alarm): the next decision waits for ``window`` new frames."""
        self._recent.clear()

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
class EmbeddingDetector(WindowedDetector):
    """Kernel shift of encoder embeddings from a reference; threshold set by ERT (frames).

    A frame's novelty is 1 - mean_r k(r, x) / mean_{r≠r'} k(r, r') over the reference
    embeddings r (Gaussian kernel, median-heuristic width): ~0 for frames like the reference,
    1 for frames unlike any of it. The window's mean novelty is the MMD's cross term. The full
    MMD² also holds a within-window term, which grows when consecutive frames are near
    copies of each other (they are: the same area, a little moved), so on a stationary
    stream it sat near its maximum; the cross term is linear in the window, and correlated
    frames change only its variance, which the calibration accounts for.
    """

    min_shift: float = 0.0
    bandwidth: float = 3.0  # kernel width as a multiple of the reference's median distance
    _ref: np.ndarray = field(default_factory=lambda: np.empty((0, 0)), init=False, repr=False)
    _gamma: float = field(default=1.0, init=False)
    _self_similarity: float = field(default=1.0, init=False)
    _novelty: MeanShiftDetector | None = field(default=None, init=False, repr=False)

    def novelty(self, embeddings: np.ndarray) -> np.ndarray:
        """Per-frame novelty (n,) of embeddings (n, d) against the reference (0 alike, 1 unlike)."""
        x = np.asarray(embeddings, dtype=np.float64).reshape(-1, self._ref.shape[1])
        similarity = np.exp(-self._gamma * _sq_dists(self._ref, x)).mean(axis=0)
        return 1.0 - similarity / self._self_similarity

    def fit(self, reference: np.ndarray) -> EmbeddingDetector:
        """Calibrate on reference embeddings (n, d) in time order.

        Alternate blocks of ``window`` frames are the reference and the held-out frames whose
        novelty is the null distribution: blocks rather than single frames, so a held-out
        frame's near copy (its neighbour in time) is not in the reference.
        """
        reference = np.asarray(reference, dtype=np.float64)
        if reference.ndim != 2 or len(reference) < 2 * MIN_REFERENCE:
            raise InputError(
                f"embedding reference needs ≥ {2 * MIN_REFERENCE} embeddings (n, d), got {reference.shape}"
            )
        block = np.arange(len(reference)) // max(1, min(self.window, len(reference) // 4))
        ref, held_out = reference[block % 2 == 0], reference[block % 2 == 1]
        d2 = _sq_dists(reference, reference)
        median = float(np.median(d2[d2 > 0])) if (d2 > 0).any() else 1.0
        self._gamma = 1.0 / max(self.bandwidth**2 * median, 1e-12)
        self._ref = ref
        k = np.exp(-self._gamma * _sq_dists(ref, ref))
        n = len(ref)
        self._self_similarity = float((k.sum() - np.trace(k)) / max(n * (n - 1), 1))
        self._novelty = MeanShiftDetector(self.ert, self.window, self.seed, min_shift=self.min_shift)
        # The held-out frames are spliced blocks, so their own autocorrelation reads low: take
        # the contiguous reference's.
        self._novelty.fit(self.novelty(held_out), inflation=window_inflation(reference, self.window))
        self.threshold = self._novelty.threshold
        self._recent.clear()
        return self

    def restart(self) -> None:
        """Empty the window (after an alarm)."""
        if self._novelty is not None:
            self._novelty.restart()

    def update(self, embedding: np.ndarray) -> float:
        """Add one frame's embedding; the window's novelty shift (NaN until it is full)."""
        if self._novelty is None or not self.ready:
            return float("nan")
        return self._novelty.update(float(self.novelty(embedding)[0]))


@dataclass
class MeanShiftDetector(WindowedDetector):
    """|window mean - reference mean| / reference spread of a scalar per-frame score.

    ``min_shift`` (score units) is the smallest window-mean change that raises an alarm, or
    ``relative_shift`` times the reference median if that is more: a noisy regime's scores
    scatter in proportion to their level.
    """

    min_shift: float = 0.0
    relative_shift: float = 0.0
    _mu: float = field(default=0.0, init=False)
    _sd: float = field(default=1.0, init=False)

    def fit(self, reference: np.ndarray, inflation: float | None = None) -> MeanShiftDetector:
        """Calibrate on reference scores (n,) in time order; ``inflation`` overrides the
        autocorrelation widening measured on them (for scores that are not one contiguous run)."""
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
        widen = np.sqrt(window_inflation(reference, self.window) if inflation is None else inflation)
        self._calibrate(stat, len(z), np.random.default_rng(self.seed), widen)
        floor = max(self.min_shift, self.relative_shift * abs(self._mu))
        self.threshold = max(self.threshold, floor / self._sd)
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
