"""Thresholds for windowed detectors from the reference frames and the user's ERT alone.

Each detector watches one per-frame feature: its statistic is |mean of the last ``window``
frames − mean of the ``lookback`` frames before them| in units of the reference's robust
spread. Comparing with the frames just before (not with a reference fixed once) is what keeps
slow, harmless wander quiet — the sample drifting so that defects come into view, slowly
growing contamination — while an abrupt change or a ramp faster than the threshold per
``lookback`` frames is caught: the slowest rate that is absorbed is, per feature,
threshold × scale / lookback per frame, and the run log reports it.

Thresholds come from simulated stationary streams drawn from the reference itself by a
circular block bootstrap: consecutive frames are correlated, so frames are drawn in blocks as
long as the measured autocorrelation lasts (the integrated autocorrelation time). All
detectors are calibrated together on the same streams, at one common per-frame tail level
chosen so that the simulated mean run length to the first alarm of any detector is the ERT.
No constant enters but the ERT, the window and the look-back.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from scopeflow.errors import InputError

MIN_REFERENCE = 16  # frames: fewer cannot hold a block bootstrap with W = 10 windows
STREAMS = 64  # simulated stationary streams


def integrated_autocorrelation(x: np.ndarray) -> float:
    """Integrated autocorrelation time (frames) of a series (n,) or (n, d), the longest over columns
    (one block length serves all detectors: blocks long enough for the slowest keep every one's):
    1 + 2·Σ ρ_k summed until the first non-positive ρ_k (Geyer's initial positive sequence)."""
    arr = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    taus = []
    for col in arr.T:
        col = col[np.isfinite(col)]
        if len(col) < 8 or np.var(col) <= 0:
            continue
        c = col - col.mean()
        den = float((c * c).sum())
        tau = 1.0
        for k in range(1, len(c) // 3):
            rho = float((c[k:] * c[:-k]).sum() / den)
            if rho <= 0:
                break
            tau += 2.0 * rho
        taus.append(tau)
    return float(np.max(taus)) if taus else 1.0


def block_length(x: np.ndarray) -> int:
    """Bootstrap block length (frames): the integrated autocorrelation time, at most n/4 so a
    resample still mixes several blocks."""
    return int(np.clip(np.ceil(integrated_autocorrelation(x)), 1, max(1, len(x) // 4)))


def block_indices(n: int, length: int, block: int, streams: int, rng: np.random.Generator) -> np.ndarray:
    """(streams, length) indices into a reference of ``n`` frames: circular blocks of ``block``."""
    blocks = -(-length // block)
    starts = rng.integers(0, n, size=(streams, blocks, 1))
    idx = (starts + np.arange(block)[None, None, :]) % n
    return idx.reshape(streams, blocks * block)[:, :length]


def _robust(reference: np.ndarray, resolution: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        # A feature with no value on any reference frame (no columns found at all) stays NaN
        # and never fires.
        warnings.simplefilter("ignore", RuntimeWarning)
        centre = np.nanmedian(reference, axis=0)
        mad = 1.4826 * np.nanmedian(np.abs(reference - centre), axis=0)
        sd = np.nanstd(reference, axis=0)
    # The MAD ignores outlier frames; where most frames are identical (MAD 0) the plain spread
    # is all there is; where every frame is identical, the feature's own resolution.
    scale = np.where(mad > 0, mad, sd)
    return centre, np.maximum(scale, resolution)


@dataclass(frozen=True)
class Calibration:
    """Per-detector centre and scale (feature units) and threshold (in scales), the bootstrap
    block length (frames), the simulated ERT (frames) and the window (frames)."""

    names: tuple[str, ...]
    centre: np.ndarray
    scale: np.ndarray
    threshold: np.ndarray
    block: int
    window: int
    lookback: int
    simulated_ert: float

    def statistics(self, features: np.ndarray) -> np.ndarray:
        """|mean of the last ``window`` − mean of the ``lookback`` before| / scale per detector,
        from the latest features (k, d), time order; NaN features (a frame without columns)
        are left out of their detector's means."""
        f = np.asarray(features, dtype=np.float64).reshape(-1, len(self.names))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            now = np.nanmean(f[-self.window :], axis=0)
            before = np.nanmean(f[-self.window - self.lookback : -self.window], axis=0)
        return np.abs(now - before) / self.scale

    def absorbed_rate(self) -> dict[str, float]:
        """Per detector, the slowest steady change (feature units per frame) that is reported:
        anything slower is absorbed by the look-back."""
        return {
            n: float(t * s / (self.lookback + self.window) * 2)
            for n, t, s in zip(self.names, self.threshold, self.scale, strict=True)
        }

    def as_dict(self) -> dict:
        """Readable form (for the dataset's monitor state and the run log)."""

        def num(values: np.ndarray) -> list[float | None]:
            return [float(v) if np.isfinite(v) else None for v in values]

        return {
            "detectors": list(self.names),
            "centre": num(self.centre),
            "scale": num(self.scale),
            "threshold": num(self.threshold),
            "block_frames": self.block,
            "window_frames": self.window,
            "lookback_frames": self.lookback,
            "simulated_ert_frames": self.simulated_ert,
        }


def sorted_quantile(columns: np.ndarray, q: float, *, offset: int = 0, n: int | None = None) -> np.ndarray:
    """``np.quantile(x, q, axis=0)`` (its default, linear method) of columns already sorted along
    axis 0: the same numbers by numpy's own formula, without the partition of the whole column
    that each call of ``np.quantile`` costs (the calibration asks for ~40 quantiles of ~200 000
    simulated statistics per detector). Columns must be free of NaN. ``columns`` may be the
    sorted rows ``offset``… of ``n`` rows in all (the top of the order), holding the rows asked for."""
    n = columns.shape[0] + offset if n is None else n
    virtual = (n - 1) * q
    if virtual >= n - 1:
        return columns[-1].copy()
    prev = max(0, int(np.floor(virtual)))
    if prev < offset:
        raise ValueError(f"quantile {q} needs row {prev}; the columns hold rows {offset}… only")
    if virtual < 0:
        return columns[0].copy()
    gamma = virtual - prev
    a, b = columns[prev - offset], columns[prev + 1 - offset]
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


class _FirstExceedance:
    """Frames to the first frame whose statistic exceeds a threshold, per simulated stream, for
    any thresholds (one per detector), without scanning the streams again.

    The first frame of a stream where a detector exceeds ``t`` is one of its running records
    (a statistic above every one before it: all earlier ones are ≤ t below it), and the first
    record above ``t`` is that frame; a stream of length L holds ~ln L records per detector.
    So the records are found once (one pass over the statistics) and each of the calibration's
    ~40 run-length evaluations compares thresholds with them alone: the same comparisons of
    the same numbers as ``stats > t`` over every frame, so the same run lengths to the bit.
    """

    def __init__(self, stats: np.ndarray) -> None:
        """``stats`` (streams, detectors, frames), each stream's frames contiguous."""
        s, d, n = stats.shape
        self.length = n
        if np.isnan(stats).any():
            stats = np.where(np.isnan(stats), -np.inf, stats)  # a NaN never exceeds a threshold
        record = np.ones(stats.shape, dtype=bool)
        record[..., 1:] = stats[..., 1:] > np.maximum.accumulate(stats, axis=2)[..., :-1]
        # Records per (stream, detector), in time order (``nonzero``'s), padded with -inf.
        ss, dd, tt = np.nonzero(record)
        group = ss * d + dd
        counts = np.bincount(group, minlength=s * d)
        rank = np.arange(len(group)) - np.repeat(np.cumsum(counts) - counts, counts)
        width = max(1, int(counts.max(initial=0)))
        self.values = np.full((s * d, width), -np.inf)
        self.frames = np.zeros((s * d, width), dtype=np.int64)
        self.values[group, rank] = stats[ss, dd, tt]
        self.frames[group, rank] = tt
        self.values = self.values.reshape(s, d, width)
        self.frames = self.frames.reshape(s, d, width)

    def run_lengths(self, threshold: np.ndarray) -> np.ndarray:
        """Per stream, frames to the first statistic above ``threshold`` (d,) of any detector
        (censored at the stream length)."""
        above = self.values > np.asarray(threshold)[None, :, None]
        first = np.take_along_axis(self.frames, above.argmax(axis=2)[..., None], axis=2)[..., 0]
        return np.where(above.any(axis=2), first + 1, self.length).min(axis=1)


class _Tail:
    """The order statistics of each row of ``x`` (d, n) — what ``np.sort(x.T, axis=0)`` gives —
    sorting only the top part that is asked for (the calibration's thresholds are upper
    quantiles): partitioning is linear, and the sorted top is the full sort's top."""

    def __init__(self, x: np.ndarray, share: float = 0.02) -> None:
        self.x = x
        self.n = x.shape[1]
        self._sort(max(2, int(np.ceil(share * self.n))))

    def _sort(self, rows: int) -> None:
        if rows >= self.n:
            top = np.sort(self.x, axis=1)
        else:
            cut = self.n - rows
            top = np.sort(np.partition(self.x, cut, axis=1)[:, cut:], axis=1)
        self.top = top.T  # (rows, d): sorted along axis 0, as ``sorted_quantile`` takes them
        self.start = self.n - len(self.top)

    def quantile(self, q: float) -> np.ndarray:
        """``np.quantile(x, q, axis=0)`` (``sorted_quantile`` of the sorted columns)."""
        lowest = int(np.floor((self.n - 1) * min(max(q, 0.0), 1.0)))
        if lowest < self.start:
            self._sort(max(2 * (self.n - self.start), self.n - lowest))
        return sorted_quantile(self.top, q, offset=self.start, n=self.n)

    def last(self) -> np.ndarray:
        """The largest value of each column."""
        return self.top[-1]


def calibrate(
    reference: np.ndarray,
    names: tuple[str, ...],
    *,
    ert: float,
    window: int,
    lookback: int,
    seed: int = 0,
    streams: int = STREAMS,
    resolution: np.ndarray | None = None,
) -> Calibration:
    """Thresholds for detectors on ``reference`` features (n frames, d detectors) in time order,
        such that on stationary streams like the reference the mean frames to the first false alarm
        of any detector is ``ert``. ``resolution`` (d,): the smallest meaningful change of each feature
    (its scale where the reference never varied)."""
    ref = np.asarray(reference, dtype=np.float64)
    if ref.ndim != 2 or ref.shape[1] != len(names):
        raise InputError(f"reference features must be (frames, {len(names)}), got {ref.shape}")
    if len(ref) < MIN_REFERENCE:
        raise InputError(f"reference needs ≥ {MIN_REFERENCE} frames, got {len(ref)}")
    res = np.full(len(names), 1e-12) if resolution is None else np.asarray(resolution, np.float64)
    centre, scale = _robust(ref, res)
    # A frame without a value (no columns found) is drawn as the reference median: it would
    # have been left out of the live window's mean.
    z = np.where(np.isfinite(ref), (ref - centre) / scale, 0.0)
    n, d = z.shape
    rng = np.random.default_rng(seed)
    block = block_length(z)
    length = int(min(max(3 * ert, 300), 6000))
    span = window + lookback
    idx = block_indices(n, length + span - 1, block, streams, rng)
    # (streams, d, frames): each stream's frames contiguous for the sums and records below.
    drawn = np.ascontiguousarray(z.T[:, idx].transpose(1, 0, 2))
    csum = np.cumsum(np.concatenate([np.zeros((streams, d, 1)), drawn], axis=2), axis=2)
    # At stream frame t (span - 1 + t): the last ``window`` frames and the ``lookback`` before.
    end, cut, start = csum[..., span:], csum[..., span - window : length + span - window], csum[..., :length]
    now = (end - cut) / window
    before = (cut - start) / lookback
    # Each stream is judged with the spread of its own reference, a block resample of the
    # reference: the live spread is estimated from n frames too, and a reference that happened
    # to be calm must not make the ERT a promise only for calm references.
    own = z[block_indices(n, n, block, streams, rng)]  # (streams, n, d)
    own_mad = 1.4826 * np.median(np.abs(own - np.median(own, axis=1, keepdims=True)), axis=1)
    own_scale = np.where(own_mad > 0, own_mad, np.maximum(own.std(axis=1), 1.0))
    stats = np.abs(now - before) / own_scale[:, :, None]  # (streams, d, length)
    # Every threshold below is two order statistics of the top of each detector's statistics.
    ordered = _Tail(stats.transpose(1, 0, 2).reshape(d, -1))
    first = _FirstExceedance(stats)
    never_moved = np.where(ordered.last() > 0, 0.0, 1.0)

    def thresholds(p: float) -> np.ndarray:
        # A feature the reference never moved alarms at one resolution step.
        return np.maximum(ordered.quantile(1.0 - p), never_moved)

    def run_length(p: float) -> float:
        return float(first.run_lengths(thresholds(p)).mean())

    lo, hi = 1e-7, 0.5
    if run_length(lo) < ert:
        # Streams too short to see so rare an alarm: the largest simulated statistics, which
        # no simulated stream exceeded.
        th = np.maximum(ordered.last() * (1.0 + 1.0 / np.sqrt(ordered.n)), thresholds(0.0))
        return Calibration(names, centre, scale, th, block, window, lookback, float(length))
    for _ in range(40):
        mid = np.sqrt(lo * hi)
        if run_length(mid) >= ert:
            lo = mid
        else:
            hi = mid
    th = thresholds(lo)
    return Calibration(names, centre, scale, th, block, window, lookback, run_length(lo))


def change_inside(
    features: np.ndarray,
    threshold: np.ndarray,
    scale: np.ndarray,
    *,
    window: int,
    lookback: int,
) -> tuple[int, np.ndarray] | None:
    """Whether a stretch of frames about to become a reference holds a change, by the standard
    of a calibration (``threshold`` in units of its per-frame ``scale``, for the mean of
    ``window`` frames against the ``lookback`` before): (t, per-detector ratio to the
    threshold) for the split t of ``features`` (n, d) where the mean of up to ``window``
    frames from t differs most from the mean of up to ``lookback`` frames before it, against
    what the calibration allows; or None.

    The segments are the calibrated statistic's own (so a wander slower than it absorbs is
    absorbed here too), cut short at the stretch's ends; the threshold is carried over to
    shorter segments by the standard error of the difference (σ·√(1/a + 1/b) instead of
    σ·√(1/window + 1/lookback)), with σ the larger of the calibration's scale and the stretch's
    own per-frame spread (from successive differences, which a single step moves only once):
    a noisier stretch is not taken for a changing one. Segments are at least half a window long
    (the thresholds are for means of many frames, not the tails of single ones).
    """
    f = np.asarray(features, dtype=np.float64)
    n = len(f)
    shortest = max(2, window // 2)
    if n < 2 * shortest:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        own = 1.4826 * np.nanmedian(np.abs(np.diff(f, axis=0)), axis=0) / np.sqrt(2.0)
        sigma = np.fmax(np.asarray(scale, np.float64), own)
        allowed = np.asarray(threshold, np.float64) / np.sqrt(1.0 / window + 1.0 / lookback)
        best, best_t, best_ratio = 1.0, None, None
        for t in range(shortest, n - shortest + 1):
            before, after = f[max(0, t - lookback) : t], f[t : t + window]
            se = sigma * np.sqrt(1.0 / len(before) + 1.0 / len(after))
            ratio = np.abs(np.nanmean(after, axis=0) - np.nanmean(before, axis=0)) / se / allowed
            top = float(np.nanmax(np.where(np.isfinite(ratio), ratio, 0.0)))
            if top > best:
                best, best_t, best_ratio = top, t, ratio
    return None if best_t is None else (best_t, best_ratio)
