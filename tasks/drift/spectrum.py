"""What the image formation did to a frame, read from its Fourier spectrum (no network involved).

A HAADF frame is counts = dose × (object ⊗ probe) + noise. Its power spectrum separates the
parts: the noise of counting (Poisson, plus read noise) is white, so where the optics pass no
signal the spectrum is flat at the noise variance; the signal's power, after that floor is
taken off, falls with spatial frequency as the probe's transfer function squared (defocus,
probe and source size move it); the lattice shows as sharp reflections whose positions
(spacing, rotation) do not change when the sample drifts under the probe (a translation only
changes phases). Each frame is summarised once (``image_stats``, ~1 ms at 128² px); a
reference stretch fixes what to compare with (``SpectrumReference``), and ``features`` turns a
frame into the numbers the monitor watches, all in physical units.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy.ndimage import maximum_filter

from scopeflow.optics import probe_otf, wavelength

PEAKS = 16  # strongest reflections kept per frame (a lattice shows 6-12 in the passband)
# The noise floor is the median of the periodogram over the corners beyond the Nyquist circle;
# a white noise periodogram bin is exponentially distributed, whose median is ln 2 × its mean.
LN2 = float(np.log(2.0))


@dataclass(frozen=True)
class ImageStats:
    """One frame's spectrum summary: ``mean`` counts/px, ``noise`` white noise variance
    (counts²/px), ``profile`` radially averaged power per ring (counts²/px, rings of width one
    Fourier bin, centres ``ring_k`` 1/Å), ``peaks`` (PEAKS, 3): the strongest local maxima (ky,
    kx in 1/Å, power / noise), NaN rows when fewer."""

    mean: float
    noise: float
    profile: np.ndarray
    ring_k: np.ndarray
    peaks: np.ndarray
    pixel_size: float
    ring_bins: np.ndarray  # Fourier bins per ring (the ring mean's noise scales as 1/√bins)

    def as_row(self) -> np.ndarray:
        """Flat float vector (for storage): mean, noise, pixel size, profile, peaks."""
        return np.concatenate([[self.mean, self.noise, self.pixel_size], self.profile, self.peaks.ravel()])


@lru_cache(maxsize=16)
def _grid(shape: tuple[int, int], pixel_size: float) -> tuple[np.ndarray, ...]:
    ny, nx = shape
    ky = np.fft.fftfreq(ny, d=pixel_size)[:, None] * np.ones((1, nx // 2 + 1))
    kx = np.fft.rfftfreq(nx, d=pixel_size)[None, :] * np.ones((ny, 1))
    k = np.hypot(ky, kx)
    dk = 1.0 / (max(ny, nx) * pixel_size)  # one Fourier bin, 1/Å
    ring = np.floor(k / dk + 0.5).astype(np.int64)
    nyquist = 0.5 / pixel_size
    window = np.outer(np.hanning(ny), np.hanning(nx))
    return ky, kx, k, ring, dk, k > nyquist, window, window / np.sqrt((window**2).sum())


def image_stats(image: np.ndarray, pixel_size: float) -> ImageStats:
    """Spectrum summary of one frame (``pixel_size`` Å/px).

    The frame is Hann-windowed so its edges (a crop is not periodic) do not leak a cross of
    power through the spectrum; the window is normalised so that white noise of variance σ²
    gives a periodogram of mean σ² at every frequency.
    """
    img = np.asarray(image, dtype=np.float64)
    shape = (int(img.shape[0]), int(img.shape[1]))
    _ky, _kx, _k, ring, dk, corners, window, norm = _grid(shape, float(pixel_size))
    mean = float(
        (img * window).sum() / window.sum()
    )  # tapered like the spectrum: columns at the edge enter smoothly
    power = np.abs(np.fft.rfft2((img - (img * window).sum() / window.sum()) * norm)) ** 2
    # The half-plane kx = 0 column holds each power once; others stand for their mirror too.
    noise = float(np.median(power[corners]) / LN2) if corners.any() else float(np.median(power) / LN2)
    bins = np.bincount(ring.ravel(), minlength=ring.max() + 1).astype(np.float64)
    profile = np.bincount(ring.ravel(), weights=power.ravel(), minlength=len(bins)) / np.maximum(bins, 1)
    ring_k = np.arange(len(bins)) * dk
    # Reflections: local maxima that white noise would reach by chance (an exponential bin over
    # t × floor has probability e^-t) less than once in 10⁵ frames over the whole half-plane:
    # rarer than any ERT a user sets by two orders, so a noise peak is never "a new reflection".
    t = np.log(1e5 * power.size)
    # Local maxima in the full plane as well: the kx = 0 column's left neighbour is the mirror of
    # kx = +1, not the Nyquist column that wrapping would give.
    mirror = power[(-np.arange(shape[0])) % shape[0], 1:2]
    around = maximum_filter(np.concatenate([mirror, power], axis=1), size=3, mode="wrap")[:, 1:]
    local = (power == around) & (power > t * noise) & (ring >= 2)
    rows, cols = np.nonzero(local)
    order = np.argsort(-power[rows, cols])[:PEAKS]
    peaks = np.full((PEAKS, 3), np.nan)
    dky, dkx = 1.0 / (shape[0] * pixel_size), 1.0 / (shape[1] * pixel_size)
    for i, (r, c) in enumerate(zip(rows[order], cols[order], strict=True)):
        # Sub-bin position: power-weighted centroid of the 3×3 neighbourhood (a peak's position
        # to a fraction of a bin, so a spacing change of a few % is measurable on 128² frames).
        # The neighbourhood is taken in the full plane: next to the kx = 0 column lies the
        # mirror of kx = +1 (a real frame's power is even, P(-k) = P(k)). Clipping there had
        # counted the kx = 0 column twice and dropped that side of the lobe, pulling a
        # reflection near the ky axis off its angle by ~1° either way from frame to frame (MoS2
        # at -88.6°, held-out benchmark: one of the strongest reflections, named "lattice").
        fy = (r if r < (shape[0] + 1) // 2 else r - shape[0]) + np.arange(-1, 2)
        fx = c + np.arange(-1, 2)
        gy, gx = np.meshgrid(fy, fx, indexing="ij")
        # A peak at the Nyquist column has its right neighbour past the half-plane: kx = n/2 + 1
        # is -(n/2 - 1), the mirror again (a MoS2 twin frame's reflection there raised IndexError).
        wrapped = gx % shape[1]
        flip = wrapped > shape[1] // 2
        w = power[np.where(flip, -gy, gy) % shape[0], np.where(flip, shape[1] - wrapped, wrapped)]
        peaks[i, 0] = float((gy * dky * w).sum() / w.sum())
        peaks[i, 1] = float((gx * dkx * w).sum() / w.sum())
        peaks[i, 2] = power[r, c] / noise
    return ImageStats(mean, noise, profile, ring_k, peaks, float(pixel_size), bins)


def _fold(peaks: np.ndarray) -> np.ndarray:
    """Reflections as points of the half-plane kx ≥ 0 with Friedel mates folded (k ≡ -k)."""
    p = np.asarray(peaks, dtype=np.float64)[:, :2]
    flip = (p[:, 1] < 0) | ((p[:, 1] == 0) & (p[:, 0] < 0))
    p[flip] *= -1
    return p


def _near(a: np.ndarray, b: np.ndarray, tol: float) -> np.ndarray:
    """For each point of ``a`` (n, 2), whether a point of ``b`` (m, 2) or its Friedel mate is within ``tol``."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(a), dtype=bool)
    d = np.minimum(
        np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1),
        np.linalg.norm(a[:, None, :] + b[None, :, :], axis=-1),
    )
    return (d <= tol).any(axis=1)


@dataclass(frozen=True)
class SpectrumReference:
    """What a reference stretch of frames fixed: its median signal profile (counts²/px per ring,
    noise removed, relative to mean² so a dose change alone leaves it), the rings that hold
    signal (``band``: from two bins to the information limit ``k_info`` 1/Å), and its
    reflections (``reflections`` (r, 2) ky, kx 1/Å, folded to kx ≥ 0; ``tolerance`` 1/Å)."""

    profile: np.ndarray
    band: np.ndarray
    k_info: float
    reflections: np.ndarray
    tolerance: float
    ring_k: np.ndarray
    ring_bins: np.ndarray
    share_resolution: float = 0.0
    # The lattice's rotation (°) as the reference frames showed it (``rotation_spread``): the
    # mean over reflections of each one's angle against its reference position (the matching's
    # own offset), and that mean's standard error across the reflections.
    rotation_centre_deg: float = 0.0
    rotation_scatter_deg: float = float("nan")
    # The frames' mean signal per ring and its standard error (``mean_signal``), what the
    # transfer fits compare with: the reference's own noise, propagated into every fit against
    # it. None (states stored before they were kept): ``profile``, taken as exact.
    signal: np.ndarray | None = None
    signal_se: np.ndarray | None = None

    @classmethod
    def fit(cls, stats: Sequence[ImageStats]) -> SpectrumReference:
        """The reference of a stretch of frames of one shape and pixel size."""
        profile = mean_profile(stats)
        fit_signal, fit_signal_se = mean_signal(stats)
        s0 = stats[0]
        noise_rel = np.median([s.noise / max(s.mean, 1e-12) ** 2 for s in stats])
        # A ring holds signal where the median frame's excess over the floor exceeds three
        # standard errors of a ring mean of white noise (Hann-windowed bins are pairwise
        # correlated: half as many independent ones).
        se = noise_rel * np.sqrt(2.0 / np.maximum(s0.ring_bins, 1))
        signal = (profile > 3.0 * se) & (np.arange(len(profile)) >= 2)
        k_nyq = 0.5 / s0.pixel_size
        signal &= s0.ring_k <= k_nyq
        k_info = float(s0.ring_k[signal].max()) if signal.any() else float(s0.ring_k[2])
        band = (np.arange(len(profile)) >= 2) & (s0.ring_k <= k_info)
        dk = float(s0.ring_k[1])
        tolerance = 1.5 * dk  # a Hann-windowed peak's centroid scatters within its 3-bin main lobe
        pts = [_fold(s.peaks[np.isfinite(s.peaks[:, 0])]) for s in stats]
        allpts = np.concatenate(pts) if pts else np.empty((0, 2))
        # The lattice's reflections: every peak the reference frames showed (a noise peak is a
        # 1e-5 event per frame, so what the reference saw, the lattice made).
        keep: list[np.ndarray] = []
        for p in allpts:
            if not (keep and _near(p[None], np.array(keep), tolerance)[0]):
                keep.append(p)
        refl = np.array(keep).reshape(-1, 2)
        # The share of reflection power one typical reference reflection takes on a typical
        # reference frame: the smallest "new reflections" change that means a new reflection
        # rather than one of the lattice's own peaks wandering past the tolerance or a weak
        # order flickering over the detection limit (seen on drifting crops of abTEM frames).
        shares = [
            np.nanmedian(s.peaks[:, 2]) / np.nansum(s.peaks[:, 2])
            for s in stats
            if np.isfinite(s.peaks[:, 2]).any()
        ]
        share = float(np.median(shares)) if shares else 1.0
        ref = cls(
            profile,
            band,
            k_info,
            refl,
            tolerance,
            s0.ring_k,
            s0.ring_bins,
            share,
            signal=fit_signal,
            signal_se=fit_signal_se,
        )
        measured = ref.rotation_spread(stats)
        if measured is None:
            return ref
        centre, scatter = measured
        return replace(ref, rotation_centre_deg=centre, rotation_scatter_deg=scatter)

    def rotation_spread(self, stats: Sequence[ImageStats]) -> tuple[float, float] | None:
        """The lattice's rotation (degrees) over these frames against this reference, and its
        standard error (degrees); None where fewer than two reflections can be followed.

        Each reference reflection seen among a frame's strongest (as ``lattice_change`` picks
        them) in at least half the frames gives its own angle change (the median over those
        frames); the rotation is their mean and its error their scatter over √count. A rotation
        turns every reflection alike. A reflection's centroid is also pulled by what its
        Hann-windowed lobe overlaps — the content in view, a vacancy's diffuse scatter — and
        that pull moves each reflection its own way as a crop drifts (held-out MoS2: +1.0° at
        30° and -0.9° at 90° over 150 frames of drifting crops, at 0 and at 40 Å alike, while a
        median over the strongest peaks moved 0.2–0.4° against a frame-to-frame spread of
        0.03°): a scatter across reflections, which the error holds, not a rotation.
        """
        moves: dict[int, list[float]] = {}
        ref = self.reflections
        if len(ref) == 0:
            return None
        ang_ref = np.degrees(np.arctan2(ref[:, 0], ref[:, 1]))
        for s in stats:
            pk = s.peaks[np.isfinite(s.peaks[:, 0])]
            if len(pk) == 0:
                continue
            strongest = _fold(pk[np.argsort(-pk[:, 2])[: max(6, len(pk) // 4)]])
            d = np.minimum(
                np.linalg.norm(strongest[:, None, :] - ref[None], axis=-1),
                np.linalg.norm(strongest[:, None, :] + ref[None], axis=-1),
            )
            nearest = np.argmin(d, axis=1)
            taken: set[int] = set()  # a reflection and its Friedel mate are one reflection
            for j, (q, i) in enumerate(zip(strongest, nearest, strict=True)):
                i = int(i)
                if d[j, i] > self.tolerance or i in taken:
                    continue
                taken.add(i)
                ang = np.degrees(np.arctan2(q[0], q[1]))
                moves.setdefault(i, []).append(float((ang - ang_ref[i] + 90.0) % 180.0 - 90.0))
        per = np.array([np.median(v) for v in moves.values() if 2 * len(v) >= len(stats)])
        if len(per) < 2:
            return None
        return float(per.mean()), float(per.std(ddof=1) / np.sqrt(len(per)))

    def features(self, s: ImageStats) -> dict[str, float]:
        """A frame's image-formation features against this reference.

        ``dose``: ln mean counts. ``blur``: the change of the Gaussian-equivalent blur variance
        σ² (Å²) that best explains the signal profile's ratio to the reference (ln ratio =
        c - 4π²·Δσ²·k² over the band, rings weighted by their signal), positive when finer
        detail is lost (defocus, a larger probe or source). ``contrast``: that fit's ln signal
        amplitude change at the fit's weighted mean k² (in practice the lattice's strong rings;
        defocus, contamination and thickness change it, dose alone does not). ``reflections``: the share of the frame's reflection power at positions that are
        not reference reflections (0 same lattice, 1 a new one).
        """
        rel = _relative_signal(s)
        blur, contrast = self._blur_fit(rel)
        if not np.isfinite(contrast):
            # A reference with too few rings of signal for the fit (strong defocus, very low
            # dose): contrast as the total signal power over mean² against the reference's, so a
            # return to focus from there is still seen.
            inside = (np.arange(len(rel)) >= 2) & (self.ring_k <= 0.5 / s.pixel_size)
            total = float((np.clip(rel, 0.0, None) * self.ring_bins)[inside].sum())
            ref_total = float((np.clip(self.profile, 0.0, None) * self.ring_bins)[inside].sum())
            contrast = float(np.log(max(total, 1e-12) / max(ref_total, 1e-12)))
        pk = s.peaks[np.isfinite(s.peaks[:, 0])]
        if len(pk) and len(self.reflections):
            new = ~_near(_fold(pk), self.reflections, self.tolerance)
            reflections = float(pk[new, 2].sum() / pk[:, 2].sum())
        else:
            reflections = 0.0 if len(pk) == 0 else 1.0
        return {
            "dose": float(np.log(max(s.mean, 1e-12))),
            "blur": blur,
            "contrast": contrast,
            "reflections": reflections,
        }

    def _blur_fit(self, rel: np.ndarray) -> tuple[float, float]:
        """(Δσ² Å², ln amplitude change) from a relative signal profile against the reference."""
        band = self.band & (self.profile > 0)
        if band.sum() < 3:
            return float("nan"), float("nan")
        k2 = self.ring_k[band] ** 2
        # Rings where the frame lost its signal to the noise are floored at one standard error
        # of the ring mean, so the fit sees "at most this much" rather than a log of a negative.
        floor = self.profile[band] * 1e-3
        y = np.log(np.maximum(rel[band], floor) / self.profile[band])
        w = self.profile[band] * np.sqrt(self.ring_bins[band])
        # The amplitude is taken at the fit's weighted mean k², where it and the blur are
        # uncorrelated, not extrapolated to k → 0: there it took the blur's error times the
        # lever arm, and on crops of a drifting sample the weak low rings (the content in view,
        # ×100 in power over 3000 frames) moved it by e^±4 while the lattice rings held.
        k2_mean = float((w**2 * k2).sum() / (w**2).sum())
        a = np.stack([np.ones_like(k2), -4.0 * np.pi**2 * (k2 - k2_mean)], axis=1)
        coef, *_ = np.linalg.lstsq(a * w[:, None], y * w, rcond=None)
        return float(coef[1]), float(coef[0])

    def defocus_response(
        self,
        shape: tuple[int, int],
        pixel_size: float,
        *,
        voltage_kv: float,
        semiangle_mrad: float,
        cs_mm: float = 0.0,
        defocus: float = 0.0,
        change: float,
    ) -> dict[str, float]:
        """How much each of ``features`` moves (its units) when |defocus| changes by ``change``
        Å from ``defocus`` (where the reference was taken), frames of ``shape`` at
        ``pixel_size`` Å/px: the reference's signal profile seen through the probe's transfer
        (``scopeflow.optics.probe_otf``) at the new defocus over the old. Of the two signs, the
        smaller move (near focus the transfer is flat in defocus, so a step towards focus
        moves less). NaN for a feature the reference cannot measure."""
        radial = _ring_transfer(self, shape, pixel_size, voltage_kv, semiangle_mrad, cs_mm)
        base = np.maximum(radial(defocus), 1e-300)
        out: dict[str, float] = {}
        for df in (defocus + change, abs(defocus - change)):
            model = self.profile * radial(df) / base
            seen = ImageStats(
                1.0, 0.0, model, self.ring_k, np.full((PEAKS, 3), np.nan), pixel_size, self.ring_bins
            )
            for name, value in self.features(seen).items():
                if np.isfinite(value):
                    out[name] = min(out.get(name, np.inf), abs(value))
        return {name: out.get(name, float("nan")) for name in ("dose", "blur", "contrast", "reflections")}

    def lattice_change(self, stats: Sequence[ImageStats]) -> dict[str, float]:
        """Spacing change (relative, +0.12 = 12 % larger spacing), rotation (degrees) of the
        frames' strongest reflections against the nearest reference ones, and their new share."""
        pk = np.concatenate([s.peaks[np.isfinite(s.peaks[:, 0])] for s in stats] or [np.empty((0, 3))])
        if len(pk) == 0 or len(self.reflections) == 0:
            return {"spacing": float("nan"), "rotation_deg": float("nan"), "new_reflections": float("nan")}
        strongest = _fold(pk[np.argsort(-pk[:, 2])[: max(6, len(pk) // 4)]])
        ref = self.reflections
        k_now = np.median(np.hypot(*strongest.T))
        k_ref_strong = np.hypot(*ref.T)
        # The nearest reference ring in |k| names the reflection order being compared.
        k_ref = k_ref_strong[np.argmin(np.abs(k_ref_strong - k_now))]
        ang_now = np.degrees(np.arctan2(strongest[:, 0], strongest[:, 1]))
        ang_ref = np.degrees(np.arctan2(ref[:, 0], ref[:, 1]))
        diff = (ang_now[:, None] - ang_ref[None, :] + 90.0) % 180.0 - 90.0
        rotation = float(np.median(diff[np.arange(len(diff)), np.argmin(np.abs(diff), axis=1)]))
        new = ~_near(strongest, ref, self.tolerance)
        return {
            "spacing": float(k_ref / k_now - 1.0),
            "rotation_deg": rotation,
            "new_reflections": float(new.mean()),
        }


def _relative_signal(s: ImageStats) -> np.ndarray:
    """Signal power per ring with the noise floor removed, relative to mean² (dose-free)."""
    return (s.profile - s.noise) / max(s.mean, 1e-12) ** 2


def mean_profile(stats: Sequence[ImageStats]) -> np.ndarray:
    """Median relative signal profile of several frames (per ring, noise removed, / mean²)."""
    return np.median(np.stack([_relative_signal(s) for s in stats]), axis=0)


def mean_signal(stats: Sequence[ImageStats]) -> tuple[np.ndarray, np.ndarray]:
    """The frames' mean relative signal per ring (noise removed, / mean²) and its standard
    error, for the transfer fits.

    The mean, not the median (``mean_profile``, what a single frame is compared with): a ring
    of few Fourier bins is skewed (a Gamma of B/2 degrees), so its median over frames lies
    below its mean by ~N/(3·B/2) for a noise floor N — nothing at high dose, but at 4·10⁴
    e/Å² (N ≈ 6 mean²) it sank the weak higher orders of a batch by as much as their signal,
    which read as a 27 Å defocus against an in-focus reference at 5·10⁶.

    Two sources, the larger kept per ring: counting noise, propagated from the frames' own
    measured noise floor N (a periodogram bin of signal S over white noise N varies by
    N² + 2SN, and a ring of B Hann-windowed bins holds B/2 independent ones), and what the
    frames show beyond it — the ring's spread over the frames (the content in view changes as
    a sample drifts under the probe).
    """
    rel = np.stack([_relative_signal(s) for s in stats])
    n = len(rel)
    centre = rel.mean(axis=0)
    floor = float(np.median([s.noise / max(s.mean, 1e-12) ** 2 for s in stats]))
    bins = np.maximum(stats[0].ring_bins, 1)
    counting = np.sqrt((floor**2 + 2.0 * np.clip(centre, 0.0, None) * floor) * 2.0 / bins)
    scatter = rel.std(axis=0, ddof=1) if n > 2 else np.zeros_like(centre)
    return centre, np.maximum(counting, scatter) / np.sqrt(n)


def _ring_transfer(
    reference: SpectrumReference,
    shape: tuple[int, int],
    pixel_size: float,
    voltage_kv: float,
    semiangle_mrad: float,
    cs_mm: float,
) -> Callable[[float], np.ndarray]:
    """The probe's |OTF|² averaged over each of the reference's spectrum rings, as a function
    of defocus (Å), for frames of ``shape`` at ``pixel_size`` Å/px."""
    ring = _grid(shape, pixel_size)[3].ravel()
    counts = np.maximum(np.bincount(ring, minlength=len(reference.profile)), 1)

    def radial(df: float) -> np.ndarray:
        otf = np.abs(probe_otf(shape, pixel_size, voltage_kv, semiangle_mrad, df, cs_mm, 0.0)) ** 2
        return np.bincount(ring, weights=otf.ravel(), minlength=len(counts)) / counts

    return radial


def _informative_rings(
    reference: SpectrumReference, stats: Sequence[ImageStats], signal: np.ndarray
) -> np.ndarray:
    """The reference's rings where the frames' mean ``signal`` (``mean_profile``) stands three
    standard errors above their noise floor: below it a ring says "at most this much", not
    how much."""
    noise_rel = np.median([s.noise / max(s.mean, 1e-12) ** 2 for s in stats])
    se = noise_rel * np.sqrt(2.0 / np.maximum(reference.ring_bins, 1) / len(stats))
    return reference.band & (reference.profile > 0) & (signal > 3.0 * se)


@lru_cache(maxsize=8)
def _leakage(side: int, rings: int, oversample: int = 4) -> np.ndarray:
    """How the Hann window spreads power between the spectrum's rings on ``side``² frames
    (rings of one Fourier bin): ``K[r, r']`` is ring r's mean periodogram when ring r' holds a
    true spectrum of unit power per bin, for the first ``rings`` rings.

    A crop is windowed before its transform, so its periodogram is the true power spectrum
    convolved with the window's |W|² (``image_stats``): a lattice reflection lands in the ring
    of its |k| and the rings either side (the Hann main lobe spans ±2 bins, and a reflection
    between bins spreads further). The true spectrum is continuous (reflections lie anywhere),
    so it is sampled ``oversample`` times finer than the bins. Computed once per frame size."""
    fine = side * oversample
    norm = _grid((side, side), 1.0)[7]
    kernel = np.abs(np.fft.fft2(norm, s=(fine, fine))) ** 2
    kernel_ft = np.fft.rfft2(kernel / kernel.sum())
    f = np.fft.fftfreq(fine, d=1.0 / fine) / oversample  # fine frequencies in coarse bins
    ring_fine = np.floor(np.hypot(f[:, None], f[None, :]) + 0.5).astype(np.int64)
    c = np.fft.fftfreq(side, d=1.0 / side)
    ring_coarse = np.floor(np.hypot(c[:, None], c[None, :]) + 0.5).astype(np.int64).ravel()
    counts = np.maximum(np.bincount(ring_coarse, minlength=rings)[:rings], 1)
    out = np.zeros((rings, rings))
    for r in range(rings):
        spread = np.fft.irfft2(np.fft.rfft2((ring_fine == r).astype(np.float64)) * kernel_ft, s=(fine, fine))
        seen = spread[::oversample, ::oversample].ravel()
        out[:, r] = (np.bincount(ring_coarse, weights=seen, minlength=rings)[:rings]) / counts
    return out


def _through_window(
    reference: SpectrumReference, stats: Sequence[ImageStats], models: np.ndarray
) -> np.ndarray:
    """Candidate transfers ``models`` (m, rings: ln of the true spectrum's change per ring) as
    the frames' periodogram rings see them: each ring holds power leaked from its neighbours
    (``_leakage``), so its ratio is the transfer averaged over where that power truly lies.
    Without it a steep transfer was judged at each ring's own |k| while the rings beside a
    strong reflection carry that reflection's power and change as it does: the held-out hBN
    frames' +0.3 Å source step (one order with signal) lowered rings 4-7 (0.31-0.55 1/Å) alike,
    ×0.08, as the reflection at 0.47 1/Å, which a Gaussian envelope (×0.33 to ×0.03 across
    those rings at each ring's own |k|) misfitted worse than a 75 Å defocus.

    The reference's profile stands for its true spectrum (the leakage is not undone: undoing
    it by non-negative least squares was tried and not kept — on a reference of few noisy
    rings, the twin's at 4·10⁴ e/Å², it named the 130 Å step and the return from it a source
    change), held to the reference's band and the ring either side of it (where the band's
    power lands): outside, the reference shows no signal above its noise, and a residue of
    that noise, raised by a sharpening envelope's exp(+4π²|Δσ²|k²) up to Nyquist, had leaked
    back as the whole prediction (a return from a larger source read Δσ² -0.05 for -0.30)."""
    s0 = stats[0]
    side = round(1.0 / (s0.pixel_size * float(reference.ring_k[1])))
    inside = np.nonzero(reference.band)[0]
    if len(inside) == 0:
        return models
    rings = min(len(reference.profile), side // 2 + 1, int(inside[-1]) + 3)
    k = _leakage(side, min(len(reference.profile), side // 2 + 1))[:rings, :rings]
    support = np.zeros(rings, dtype=bool)
    support[max(int(inside[0]) - 1, 0) : int(inside[-1]) + 2] = True
    measured = np.clip(reference.profile[:rings], 0.0, None)
    true = np.where(support, measured, 0.0)
    base = k @ true
    # (A ring beyond the reference's transfer can hold a huge ratio of two vanishing
    # transfers; it holds no reference power either, so the clip changes nothing there.)
    seen = (k @ (true[None, :] * np.exp(np.clip(models[:, :rings], -700.0, 50.0))).T).T
    out = models.copy()
    ok = base > 0
    out[:, :rings][:, ok] = np.log(np.maximum(seen[:, ok], 1e-300) / base[ok])
    return out


def _transfer_misfit(
    reference: SpectrumReference,
    stats: Sequence[ImageStats],
    models: np.ndarray,
    diffuse: tuple[np.ndarray, np.ndarray] | None = None,
    dilution: float = 1.0,
    per_ring: bool = False,
) -> tuple[np.ndarray, int] | None:
    """χ² of each candidate transfer ``models`` (with ``per_ring``, each ring's term: (m, rings)) (m, rings: ln of the frames' signal over the
    reference's, per ring) against the frames' signal profile, and the number of rings it
    sums; None where the reference holds signal in fewer than two rings.

    Both profiles are measurements (``mean_signal``): the frames' D ± σ_D and the
    reference's R ± σ_R of one true spectrum T, with D = g·T for a transfer g. Profiled over
    T, each ring adds (D - g·R)² / (σ_D² + g²·σ_R²) (errors in both variables). So a ring
    weighs what both stretches measured of it: little where the reference is noisy (a
    low-dose reference) or where the transfer multiplies the reference's noise, and a ring
    lost in the frames' noise says "at most this much" by its own error, with no cut into
    seen and unseen rings. (Weighting rings by the reference's
    profile without its noise, and holding lost rings as hard upper limits, had put a narrow
    false minimum at 90 Å beside the true 125-140 Å for the twin's 0 → 130 Å step, measured
    against a reference at 4·10⁴ e/Å² that shows only the first graphene order: a ring's
    error decides its weight now, and the likelihood's mass, not its deepest point, the
    estimate — ``fit_defocus``.)

    No free amplitude: defocus and a source or probe size change the probe's transfer but not
    its zero frequency (the probe's intensity is conserved, OTF(0) = 1), and the signal is
    relative to mean² (dose-free), so a transfer model predicts the ratio itself. (A free
    amplitude absorbed the whole change where a defocus lowers every lattice order alike:
    MoS2 at 40 Å, ×0.66 from the first order to the third.)

    The rings summed are those where the reference measured the object — its signal three
    standard errors above zero — from two bins to Nyquist. Elsewhere the reference knows
    nothing of the object (where the transfer rises many-fold, as on a return to focus, a ring
    the reference saw as 0 ± σ_R fits any model whose g·σ_R covers the frames' power: a
    sharpening envelope, σ² -0.59 Å², beat the true return from 100 Å to focus that way),
    and the frames' power there is not the optics' to explain: at low k the content in view,
    which the sample's drift changes (the twin's stream after frame 1000: rings 1-2 grew
    ×30-60 over 110 frames, and with them the envelope's χ² fell below every defocus's); beyond
    the reference's information limit, orders the frames show and the reference's noise hid
    (with them a low draw of that noise, the twin's second graphene order at -0.29 ± 0.21
    for a true +0.25, brought the false minimum at 90 Å back as the best).
    """
    rings = _fit_rings(reference, stats[0].pixel_size)
    if rings is None:
        return None
    signal, signal_se = mean_signal(stats)
    ref, ref_se = _reference_signal(reference)
    models = _at_reflections(reference, models)
    g = np.exp(np.clip(_through_window(reference, stats, models)[:, rings], -700.0, 50.0))
    # An exactly noise-free pair of profiles (rendered frames) is known to float precision.
    tiny = np.finfo(np.float64).eps * float(np.abs(signal[rings]).max())
    var = signal_se[rings] ** 2 + g**2 * ref_se[rings] ** 2 + tiny**2
    residual = signal[rings] - g * ref[rings]
    if diffuse is not None:
        residual = _object_residual(signal[rings], g * ref[rings], var, diffuse, rings, ref, dilution)
    terms = residual**2 / var
    return (terms if per_ring else terms.sum(axis=1)), int(rings.sum())


def _at_reflections(reference: SpectrumReference, models: np.ndarray) -> np.ndarray:
    """Candidate transfers ``models`` (m, rings: ln change per ring) taken, in the rings a
    reference reflection's window lobe covers (within the reference's ``tolerance``, a Hann
    lobe's 1.5 bins), at that reflection's own |k| rather than at the ring's centre.

    The power of those rings is the reflection's, leaked through the window, wherever between
    the rings it lies: it changes as the transfer at the reflection does, in every ring of its
    lobe alike. Taken at each ring's centre instead, a reflection between two rings got two
    different transfers: MoS2's first order at 0.365 1/Å, between rings at 0.313 and 0.391,
    where a probe 76 Å from focus falls steeply (×0.14 to ×0.10 of focus across the two), was
    predicted to rise ×9.3 and ×12.6 on a return to focus while both rose ×9.8 (held-out
    abTEM frames), and the fit read 21-23 Å for the in-focus frames. Interpolated linearly in
    ln between the rings either side of the reflection's |k|."""
    refl = reference.reflections
    if len(refl) == 0:
        return models
    dk = float(reference.ring_k[1])
    n = models.shape[1]
    at = np.hypot(refl[:, 0], refl[:, 1]) / dk  # reflections' |k| in (fractional) rings
    index = np.arange(n, dtype=np.float64)
    distance = np.abs(index[:, None] - at[None, :])
    nearest = np.argmin(distance, axis=1)
    covered = distance[np.arange(n), nearest] <= reference.tolerance / dk
    if not covered.any():
        return models
    where = np.clip(at[nearest[covered]], 0.0, n - 1.0)
    low = np.minimum(np.floor(where).astype(np.int64), n - 2)
    t = where - low
    out = models.copy()
    out[:, covered] = models[:, low] * (1.0 - t) + models[:, low + 1] * t
    return out


def _object_residual(
    data: np.ndarray,
    model: np.ndarray,
    var: np.ndarray,
    diffuse: tuple[np.ndarray, np.ndarray],
    rings: np.ndarray,
    ref: np.ndarray,
    dilution: float,
) -> np.ndarray:
    """Each candidate's residual (m, fitted rings) of the frames' signal ``data`` against its
    lattice ``model`` (g·R) once a change of the object itself is profiled out (weighted least
    squares, 1/``var``, per candidate): data ≈ c·model + a·|OTF(df)|².

    ``a``, the object's diffuse scattering: scatterers placed at random — a substitutional
    heavy atom or a vacancy coming into view, amorphous carbon (contamination) thickening —
    add to the object's power a spectrum flat in k (point scatterers at uncorrelated
    positions; an incoherent HAADF image is the object convolved with the probe's intensity),
    which the frames see through the probe's transfer at their defocus: one amplitude. The
    lattice's reflections are what it cannot make: its shape is smooth in k, theirs is peaked
    at the orders. (Without it the twin's 130 Å stretch, where a substitutional atom ×4.2 the
    weight of carbon drifts into the window at frame ~1050 and raises rings 0.13–0.33 1/Å
    ×100 over 300 frames, read 91 Å against its own anchor at 140 Å.) Its lower bound holds
    the reference's object power non-negative: the diffuse power cannot fall by more than
    the reference had in any ring, R / |OTF(df_ref)|².

    ``c``, the lattice's dilution: mass added to the object raises the frame's mean without
    adding lattice power, so the lattice's power relative to mean² falls by (M_before/M_now)²
    in every ring alike — a thickening amorphous layer read as a defocus otherwise (the
    twin's contamination growing to 10 % of the area: mean +11 %, 0 → 22 Å). It is held in
    [``dilution``, 1]; the caller bounds it by the measured rise of the mean counts where the
    dose is known not to have changed (1: no dilution, the mean's change is the dose's).

    ``diffuse``: (|OTF(df)|² per ring for each candidate (m, rings), the same at the
    reference's defocus (rings))."""
    transfer, at_reference = diffuse
    t = transfer[:, rings]
    w = 1.0 / var
    ref_t = at_reference[rings]
    seen = ref_t > 0
    lowest = -float(np.min(np.clip(ref[rings][seen], 0.0, None) / ref_t[seen])) if seen.any() else 0.0
    lo = float(np.clip(dilution, 0.0, 1.0))
    smm, stt, smt = (w * model**2).sum(1), (w * t**2).sum(1), (w * model * t).sum(1)
    sdm, sdt = (w * data * model).sum(1), (w * data * t).sum(1)

    def best_a(c: np.ndarray) -> np.ndarray:
        return np.maximum((sdt - c * smt) / np.maximum(stt, 1e-300), lowest)

    def best_c(a: np.ndarray) -> np.ndarray:
        return np.clip((sdm - a * smt) / np.maximum(smm, 1e-300), lo, 1.0)

    # A convex quadratic in (c, a) on the box c ∈ [lo, 1], a ≥ lowest: its minimum is the
    # free one where that lies inside, else on an edge, each edge a 1-D clipped solution.
    one = np.ones_like(smm)
    candidates = [(one, best_a(one))]
    if lo < 1.0:
        det = np.maximum(smm * stt - smt**2, 1e-300)
        c_free = (sdm * stt - sdt * smt) / det
        a_free = (sdt * smm - sdm * smt) / det
        inside = (c_free >= lo) & (c_free <= 1.0) & (a_free >= lowest)
        at_lo = np.full_like(smm, lo)
        a_low = np.full_like(smm, lowest)
        candidates += [(at_lo, best_a(at_lo)), (best_c(a_low), a_low)]
        candidates.append((np.where(inside, c_free, 1.0), np.where(inside, a_free, best_a(one))))
    best = None
    chi2 = None
    for c, a in candidates:
        r = data - c[:, None] * model - a[:, None] * t
        x = (w * r**2).sum(1)
        if best is None:
            best, chi2 = r, x
        else:
            better = x < chi2
            best = np.where(better[:, None], r, best)
            chi2 = np.where(better, x, chi2)
    return best


def _reference_signal(reference: SpectrumReference) -> tuple[np.ndarray, np.ndarray]:
    """The reference's ``signal`` and ``signal_se`` (its ``profile``, exact, where not kept)."""
    if reference.signal is None or reference.signal_se is None:
        return reference.profile, np.zeros_like(reference.profile)
    return reference.signal, reference.signal_se


def _fit_rings(reference: SpectrumReference, pixel_size: float) -> np.ndarray | None:
    """The rings the transfer fits sum (``_transfer_misfit``); None where fewer than two hold
    the reference's signal."""
    index = np.arange(len(reference.profile))
    inside = (index >= 2) & (reference.ring_k <= 0.5 / pixel_size)
    ref, ref_se = _reference_signal(reference)
    measured = inside & (ref > 3.0 * ref_se)
    return measured if measured.sum() >= 2 else None


def envelope_fits_better(
    reference: SpectrumReference,
    pixel_size: float,
    defocus_misfit: float,
    envelope_misfit: float,
    per_ring: tuple[np.ndarray, np.ndarray] | None = None,
) -> bool:
    """Whether a Gaussian envelope (``fit_envelope``) explains the frames' spectrum better than
    any defocus (``fit_defocus``), from the two fits' χ² on the same rings.

    Both models have one parameter, so their χ² compare directly; a difference within one
    (scaled as ``_posterior`` scales χ², by the better fit's own misfit per ring) is a
    likelihood ratio under e^½, a preference the data do not hold at one standard error, and
    goes to the defocus. (Without it a batch at 4·10⁴ e/Å² and 80 Å, whose noise leaves
    either model a χ² of 15.8 on 14 rings, was read a source change by 0.04.)
    """
    if not np.isfinite(envelope_misfit):
        return False
    if not np.isfinite(defocus_misfit):
        return True
    rings = _fit_rings(reference, pixel_size)
    count = 2 if rings is None else int(rings.sum())
    scale = max(1.0, min(defocus_misfit, envelope_misfit) / max(count - 1, 1))
    if not defocus_misfit - envelope_misfit > scale:
        return False
    if per_ring is None:
        return True
    # The two models are not nested (neither is the other at some parameter), so their χ²
    # difference is a sum over rings of per-ring differences d_i whose own scatter says how
    # much of it a different draw of the noise (or of the content in view) would move:
    # Vuong's statistic Σd / (√n·sd(d)) is a standard normal where the two fit equally
    # well. The envelope is named where it is more than one standard error above 0 (the same
    # one-standard-error rule as the χ² margin): a few rings at low dose, where one ring's
    # draw decides the sign of a difference of 1.5 (the twin's 0 → 40 Å at 2·10⁵ e/Å², 4.9
    # against 6.5, named a source change), do not hold that.
    d = np.asarray(per_ring[0], float) - np.asarray(per_ring[1], float)
    if len(d) < 2:
        return True
    spread = float(np.std(d, ddof=1))
    return spread == 0.0 or float(d.sum()) / (np.sqrt(len(d)) * spread) > 1.0


def _posterior(misfit: np.ndarray, rings: int) -> np.ndarray:
    """Normalised likelihood exp(-χ²/2) of candidates whose χ² over ``rings`` rings is
    ``misfit``; when the best candidate misfits more than its rings' count allows (the
    model is not the whole truth: abTEM's multislice against a probe convolution, a
    drifting crop's content), χ² is scaled down by χ²_min / (rings - 1) (Birge's ratio), so
    the data's own misfit widens the error rather than a chosen constant."""
    p = np.exp(-(misfit - misfit.min()) / (2.0 * _chi2_scale(misfit, rings)))
    return p / p.sum()


def _chi2_scale(misfit: np.ndarray, rings: int) -> float:
    """Birge's ratio of the best candidate's χ² over ``rings`` rings (at least 1)."""
    return max(1.0, float(np.min(misfit)) / max(rings - 1, 1))


@lru_cache(maxsize=8)
def _transfer_table(
    shape: tuple[int, int], pixel_size: float, voltage_kv: float, semiangle_mrad: float, cs_mm: float
) -> np.ndarray:
    """The probe's |OTF|² per spectrum ring (``_ring_transfer``) at every whole Å of |defocus|
    in ``DEFOCI``: computed once per frame shape and optics."""
    ring = _grid(shape, pixel_size)[3].ravel()
    counts = np.maximum(np.bincount(ring), 1)
    out = np.empty((len(DEFOCI), len(counts)))
    for i, df in enumerate(DEFOCI):
        otf = np.abs(probe_otf(shape, pixel_size, voltage_kv, semiangle_mrad, float(df), cs_mm, 0.0)) ** 2
        out[i] = np.bincount(ring, weights=otf.ravel(), minlength=len(counts)) / counts
    out.setflags(write=False)
    return out


# |Defocus| candidates (Å) in 1 Å steps, below the Cramér–Rao bound of a batch at a strong
# defocus (~1 Å at 80 Å): where the transfer is steep (80 Å) a coarser grid's error is a
# change of ln ratio at a lattice order that near focus, where the transfer is flat, reads as
# tens of Å (held-out hBN: 80 → 0 Å read 25 Å on a 2.5 Å grid); and a narrow minimum between
# coarse candidates would be missed, not weighed.
DEFOCI = np.arange(0.0, 301.0, 1.0)


def _defocus_models(
    reference: SpectrumReference,
    shape: tuple[int, int],
    pixel_size: float,
    grid: np.ndarray | None,
    voltage_kv: float,
    semiangle_mrad: float,
    cs_mm: float,
    reference_defocus: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ln |OTF(df)|² / |OTF(reference_defocus)|² per ring for each df of ``grid`` (None:
    ``DEFOCI``), and the two transfers: |OTF(df)|² per ring (candidates, rings) and
    |OTF(reference_defocus)|² (rings)."""
    radial = _ring_transfer(reference, shape, pixel_size, voltage_kv, semiangle_mrad, cs_mm)
    base = np.maximum(radial(reference_defocus), 1e-300)
    if grid is None:
        table = _transfer_table(shape, float(pixel_size), voltage_kv, semiangle_mrad, cs_mm)
    else:
        table = np.stack([radial(float(df)) for df in grid])
    return np.log(np.maximum(table, 1e-300) / base), table, base


def fit_defocus(
    reference: SpectrumReference,
    stats: Sequence[ImageStats],
    shape: tuple[int, int],
    *,
    voltage_kv: float,
    semiangle_mrad: float,
    cs_mm: float = 0.0,
    reference_defocus: float = 0.0,
    defoci: np.ndarray | None = None,
    dilution: float = 1.0,
) -> tuple[float, float, float]:
    """|Defocus| (Å) that makes the probe's transfer explain the frames' spectrum, its ± (Å),
    and the fit's χ² (``_transfer_misfit``, comparable with ``fit_envelope``'s).

    The ratio of the frames' signal profile to the reference's is modelled as
    |OTF(df)|² / |OTF(df_ref)|² (``_transfer_misfit``: no free amplitude, both profiles'
    noise propagated), the OTF being the probe's (``scopeflow.optics.probe_otf``, the same
    physics the twin renders with) at the instrument's voltage and aperture;
    ``reference_defocus`` is where the operator focused (0: in focus). With Cs = 0, +df and
    -df transfer alike, so the sign is not observable.

    The transfer at one lattice order is not monotonic in defocus: where the reference shows
    a single order, a steep crossing of the right attenuation (a narrow minimum) and a flat
    stretch of it (a broad one) can both fit. The likelihood over the candidates (flat prior
    over ``defoci``, default every Å to 300 Å) weighs them by what each holds, not by the
    depth of its deepest point: the estimate is the best candidate of the basin holding the
    most likelihood, and the ± the larger distance from it to the likelihood's 16th or 84th
    percentile — so a minimum the data cannot reject lies inside the error. A change of the
    object is profiled out of every candidate (``_object_residual``): its diffuse scattering
    always, and a dilution of the lattice by added mass down to ``dilution`` (the factor
    (M_before/M_now)² the mean counts allow where the dose did not change; 1: none). NaN where the likelihood's peak is at the last candidate (too little signal
    survives to bound the defocus).
    """
    nan = float("nan")
    grid = DEFOCI if defoci is None else np.asarray(defoci, float)
    models, table, base = _defocus_models(
        reference,
        shape,
        stats[0].pixel_size,
        None if defoci is None else grid,
        voltage_kv,
        semiangle_mrad,
        cs_mm,
        reference_defocus,
    )
    fit = _transfer_misfit(reference, stats, models, (table, base), dilution)
    if fit is None:
        return nan, nan, nan
    misfit, rings = fit
    best = float(misfit.min())
    if int(np.argmin(misfit)) == len(grid) - 1:
        return nan, nan, best
    posterior = _posterior(misfit, rings)
    # Basins: the stretches between the misfit's local maxima. The estimate is the best
    # candidate of the basin that holds the most likelihood (not the deepest point overall, a
    # narrow basin can hold that; not the likelihood's median either, which a basin piled
    # against 0 Å pushes off focus by half its width).
    # A barrier less than one (scaled) χ² above the minima either side of it is noise in the
    # misfit, not two basins.
    scale = _chi2_scale(misfit, rings)
    peaks = np.nonzero((misfit[1:-1] > misfit[:-2]) & (misfit[1:-1] >= misfit[2:]))[0] + 1
    bounds = [0, *peaks.tolist(), len(grid)]
    edges = [
        e
        for i, e in enumerate(peaks.tolist())
        if misfit[e] - max(misfit[bounds[i] : e].min(), misfit[e : bounds[i + 2]].min()) > scale
    ]
    basins = np.split(np.arange(len(grid)), edges)
    heaviest = max(basins, key=lambda b: float(posterior[b].sum()))
    estimate = float(grid[heaviest[int(np.argmin(misfit[heaviest]))]])
    cdf = np.cumsum(posterior)
    lo, hi = (float(grid[min(int(np.searchsorted(cdf, q)), len(grid) - 1)]) for q in (0.16, 0.84))
    # (The error is never below half the candidates' step: the estimate is one of them.)
    step = float(np.median(np.diff(grid))) if len(grid) > 1 else 0.0
    return estimate, max(estimate - lo, hi - estimate, step / 2), best


def fit_envelope(
    reference: SpectrumReference,
    stats: Sequence[ImageStats],
    shape: tuple[int, int] | None = None,
    *,
    voltage_kv: float | None = None,
    semiangle_mrad: float | None = None,
    cs_mm: float = 0.0,
    reference_defocus: float = 0.0,
    dilution: float = 1.0,
    defocus: float | None = None,
) -> tuple[float, float]:
    """The change of a Gaussian envelope's variance Δσ² (Å²) — a source or probe size change,
    exp(-4π²Δσ²k²) on the signal power — that best explains the frames' spectrum, and its
    χ² (``_transfer_misfit``, as ``fit_defocus``'s, no free amplitude: comparable with its).
    NaN, NaN with fewer than two rings of signal.

    With the probe's settings (frames of ``shape`` px, ``voltage_kv``, ``semiangle_mrad``,
    ``cs_mm``, the reference at ``reference_defocus`` Å) the object's diffuse change is
    profiled out as in ``fit_defocus`` (``_object_residual``: a flat object spectrum seen through
    the probe's transfer, here the reference's under the envelope), so the two fits have the
    same freedom and their χ² still compare; without them it is not, and its χ² is not
    comparable with ``fit_defocus``'s.

    ``defocus`` (Å, with the probe's settings; default ``reference_defocus``): the |defocus|
    the frames are at under this hypothesis, when the reference was taken at another one —
    the source changed while the probe stayed at ``defocus``, measured against an older
    reference (the operator's focused one): the model is then |OTF(defocus)|² /
    |OTF(reference_defocus)|² under the envelope."""
    fit = _envelope_misfit(
        reference,
        stats,
        shape,
        voltage_kv=voltage_kv,
        semiangle_mrad=semiangle_mrad,
        cs_mm=cs_mm,
        reference_defocus=reference_defocus,
        dilution=dilution,
        defocus=defocus,
    )
    if fit is None:
        return float("nan"), float("nan")
    i = int(np.argmin(fit[0]))
    return float(ENVELOPE_GRID[i]), float(fit[0][i])


def ring_misfits(
    reference: SpectrumReference,
    stats: Sequence[ImageStats],
    shape: tuple[int, int],
    *,
    voltage_kv: float,
    semiangle_mrad: float,
    cs_mm: float = 0.0,
    reference_defocus: float = 0.0,
    dilution: float = 1.0,
    defocus: float | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Each fitted ring's χ² term of ``fit_defocus``'s and ``fit_envelope``'s best candidates
    (the least χ² of each; same rings, same arguments, ``defocus`` as ``fit_envelope``'s),
    for ``envelope_fits_better``'s test of their difference; None where either cannot fit."""
    models, table, base = _defocus_models(
        reference, shape, stats[0].pixel_size, None, voltage_kv, semiangle_mrad, cs_mm, reference_defocus
    )
    d = _transfer_misfit(reference, stats, models, (table, base), dilution, per_ring=True)
    e = _envelope_misfit(
        reference,
        stats,
        shape,
        voltage_kv=voltage_kv,
        semiangle_mrad=semiangle_mrad,
        cs_mm=cs_mm,
        reference_defocus=reference_defocus,
        dilution=dilution,
        defocus=defocus,
        per_ring=True,
    )
    if d is None or e is None:
        return None
    return d[0][int(np.argmin(d[0].sum(axis=1)))], e[0][int(np.argmin(e[0].sum(axis=1)))]


# Candidates from -1 to 2 Å² (a source σ from 0.35 to 1.5 Å and back) in 0.005 Å² steps, a
# tenth of the smallest change the issue asks for (+0.3 Å on 0.35 Å: 0.33 Å²).
ENVELOPE_GRID = np.arange(-1.0, 2.0 + 1e-9, 0.005)


def _envelope_misfit(
    reference: SpectrumReference,
    stats: Sequence[ImageStats],
    shape: tuple[int, int] | None = None,
    *,
    voltage_kv: float | None = None,
    semiangle_mrad: float | None = None,
    cs_mm: float = 0.0,
    reference_defocus: float = 0.0,
    dilution: float = 1.0,
    defocus: float | None = None,
    per_ring: bool = False,
) -> tuple[np.ndarray, int] | None:
    """``_transfer_misfit`` of the Gaussian envelopes of ``ENVELOPE_GRID``'s Δσ² (Å²); with the
    probe's settings, the object's change profiled out as ``fit_envelope`` says (the frames at
    ``defocus``, default ``reference_defocus``)."""
    k2 = reference.ring_k**2
    models = -4.0 * np.pi**2 * ENVELOPE_GRID[:, None] * k2[None, :]
    diffuse = None
    if shape is not None and voltage_kv is not None and semiangle_mrad is not None:
        radial = _ring_transfer(reference, shape, stats[0].pixel_size, voltage_kv, semiangle_mrad, cs_mm)
        base = np.maximum(radial(reference_defocus), 1e-300)
        if defocus is not None and defocus != reference_defocus:
            at = np.maximum(radial(defocus), 1e-300)
            models = models + np.log(at / base)[None, :]
        diffuse = (np.exp(np.clip(models, -700.0, 50.0)) * base[None, :], base)
    return _transfer_misfit(reference, stats, models, diffuse, dilution, per_ring)


def envelope_error(reference: SpectrumReference, stats: Sequence[ImageStats]) -> tuple[float, float]:
    """``fit_envelope``'s Δσ² (Å², without the probe's settings) and its ±, as ``fit_defocus``'s:
    the larger distance from the estimate to the likelihood's 16th or 84th percentile over the
    candidates, the χ² scaled by Birge's ratio where the envelope misfits more than its rings
    allow (a change no envelope explains — the content in view, contamination — then gets a
    wide error, not a precise wrong one). NaN, NaN with fewer than two rings of signal."""
    fit = _envelope_misfit(reference, stats)
    if fit is None:
        return float("nan"), float("nan")
    misfit, rings = fit
    estimate = float(ENVELOPE_GRID[int(np.argmin(misfit))])
    cdf = np.cumsum(_posterior(misfit, rings))
    lo, hi = (float(ENVELOPE_GRID[min(int(np.searchsorted(cdf, q)), len(cdf) - 1)]) for q in (0.16, 0.84))
    return estimate, max(estimate - lo, hi - estimate, 0.0025)  # (never below half the candidates' step)


def defocus_bound(
    reference: SpectrumReference,
    stats: Sequence[ImageStats],
    shape: tuple[int, int],
    *,
    voltage_kv: float,
    semiangle_mrad: float,
    cs_mm: float = 0.0,
    defocus: float,
) -> float:
    """Cramér–Rao bound (Å) on |defocus| from these frames' ring profile: the smallest standard
    error any unbiased estimate from the same rings can have, at ``defocus`` Å.

    A ring's mean periodogram over B Fourier bins (B/2 independent ones under the Hann
    window) of n frames has relative variance 2/(B·n) on its total power; the log of its
    noise-removed signal has that times (total / signal)². The model is the probe's transfer
    |OTF(df)|² per ring (as in ``fit_defocus``) with a free amplitude, which is profiled out of
    the Fisher information. The reference's own noise is left out, so the true limit is higher.
    NaN where fewer than three rings carry signal.
    """
    radial = _ring_transfer(reference, shape, stats[0].pixel_size, voltage_kv, semiangle_mrad, cs_mm)

    def log_radial(df: float) -> np.ndarray:
        return np.log(np.maximum(radial(df), 1e-300))

    n = len(stats)
    signal = mean_profile(stats)
    total = np.median(np.stack([s.profile / max(s.mean, 1e-12) ** 2 for s in stats]), axis=0)
    band = _informative_rings(reference, stats, signal)
    if band.sum() < 3:
        return float("nan")
    h = 1.0  # Å: central difference step, far below the depth of focus
    g = (
        (log_radial(defocus + h) - log_radial(max(defocus - h, 0.0))) / (defocus + h - max(defocus - h, 0.0))
    )[band]
    var = (total[band] / signal[band]) ** 2 * 2.0 / (reference.ring_bins[band] * n)
    w = 1.0 / var
    info = float((w * g**2).sum() - (w * g).sum() ** 2 / w.sum())
    return float(1.0 / np.sqrt(info)) if info > 0 else float("inf")


def mass_dilution(mean_before: float, stats: Sequence[ImageStats]) -> float:
    """The lowest factor (M_before / M_now)² ≤ 1 by which mass added to the object can have
    diluted the lattice's relative power (``_object_residual``), from the frames' median mean
    counts against ``mean_before`` (counts/px), for frames at the dose of those before them:
    a rise of the mean at one dose is mass in view; a fall (vacancies, mass leaving) dilutes
    nothing."""
    now = float(np.median([s.mean for s in stats]))
    if not (np.isfinite(mean_before) and mean_before > 0 and now > 0):
        return 1.0
    return float(min(1.0, (mean_before / now) ** 2))


def depth_of_focus(voltage_kv: float, semiangle_mrad: float) -> float:
    """Rayleigh's quarter-wave depth of focus λ/(4α²), Å (~20 Å at 60 kV, 25 mrad): a defocus
    change smaller than this leaves the probe as it was."""
    return wavelength(voltage_kv) / (4.0 * (semiangle_mrad * 1e-3) ** 2)


SIGNATURE = ("log10_counts_per_A2", "log10_contrast", "high_k_share")
HIGH_K = 0.4  # 1/Å: detail finer than 2.5 Å, what separating columns 1-2 Å apart needs


def signature(s: ImageStats) -> np.ndarray:
    """Lattice- and pixel-size-robust statistics of one frame that place it in a regime of
    imaging conditions (``SIGNATURE``): counts per Å² as Poisson statistics give them
    (mean² / noise variance, free of the detector gain; it follows the dose), signal variance
    relative to mean² (contrast, which defocus and contamination lower), and the share of the
    signal power above ``HIGH_K`` (what a blurred probe no longer transfers)."""
    counts = s.mean**2 / max(s.noise, 1e-12) / s.pixel_size**2
    rel = np.clip(_relative_signal(s), 0.0, None) * s.ring_bins
    dk = s.ring_k[1]
    band = (s.ring_k >= 2 * dk) & (s.ring_k <= 0.5 / s.pixel_size)
    total = rel[band].sum()
    high = rel[band & (s.ring_k > HIGH_K)].sum() / total if total > 0 else 0.0
    contrast = total / s.ring_bins.sum()
    return np.array([np.log10(max(counts, 1e-12)), np.log10(max(contrast, 1e-12)), high])
