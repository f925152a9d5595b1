"""The second stage of similarity search: a query compared directly with each candidate frame.

The index's descriptor is blind to pose by construction, and so it cannot tell a frame from
another frame of the same lattice, defects and optics; a copy of an archived frame is best
found by registering it onto its source. For each candidate: both frames are resampled to
``WORK_PX`` (their pixel sizes say the scale); the rotation comes from Fourier–Mellin, the
circular cross-correlation of their power spectra on a polar grid (scikit-image's
``warp_polar``), for the query and its mirror image; the translation from phase correlation
(scikit-image's ``phase_cross_correlation``) at each of the ``PEAKS`` best angles and the
half turn beside each (a power spectrum cannot tell θ from θ + 180°); the score is the
normalised cross-correlation of the query with the candidate over the query's circular
window at the best pose. A lattice alone gives a high score to any frame of it, the source
(which holds the same defects, contamination and noise) a higher one.

Constants were chosen on one seed's queries of a 1080-frame twin archive
(``benchmarks/similarity.py --part rerank``) and scored on another's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft
from scipy import ndimage
from skimage.registration import phase_cross_correlation
from skimage.transform import warp_polar

from scopeflow.errors import InputError

#: Pixel size both frames are resampled to (Å/px): atom columns ≥ 1.4 Å apart span ≥ 7 px,
#: and a 256² frame at 0.09-0.16 Å/px becomes 115-205 px, so every FFT stays small.
WORK_PX = 0.2
#: Side of the spectra (px at ``WORK_PX``): both padded to it so that a radius in frequency
#: bins is the same spatial frequency (Å⁻¹) for both.
SPECTRUM_SIDE = 256
#: Band of the spectra compared for the rotation (Å⁻¹): the embedder's, from the lattice's
#: first reflections to past a 60 kV probe's information limit.
K_MIN, K_MAX = 0.25, 1.2
#: Angles sampled over the full turn: 1° apart, so the rotation is known to ±0.5°, under
#: a pixel's error at the rim of a 100 px query.
N_ANGLES = 360
#: Angles tried per mirror state (each with its half turn). A six-fold lattice puts three
#: near-equal peaks in a half turn; against its source the query's own defects make the right
#: one the highest: on the choosing seed's queries one peak found the source (or a frame
#: overlapping it) first as often as three (39 vs 40 of 43) in half the time.
PEAKS = 1
#: Smallest frame (px a side at ``WORK_PX``) worth registering.
MIN_SIDE = 24


@dataclass(frozen=True)
class Prepared:
    """A frame resampled to ``WORK_PX`` with the log-polar spectra of it and its mirror."""

    image: np.ndarray
    spectra: tuple[np.ndarray, np.ndarray]


@lru_cache(maxsize=16)
def _window(n: int) -> np.ndarray:
    """A circular Hann window of side ``n``: a rotation moves no edge into it."""
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - (n - 1) / 2, xx - (n - 1) / 2) / (n / 2)
    return np.where(r < 1, 0.5 + 0.5 * np.cos(np.pi * np.minimum(r, 1)), 0.0).astype(np.float32)


def _windowed(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The central square of ``img`` less its weighted mean, times the circular window."""
    n = min(img.shape)
    y0, x0 = (img.shape[0] - n) // 2, (img.shape[1] - n) // 2
    sq = img[y0 : y0 + n, x0 : x0 + n]
    w = _window(n)
    return (sq - (sq * w).sum() / w.sum()) * w, w


def _polar_spectrum(img: np.ndarray) -> np.ndarray:
    """Log power spectrum on a polar grid (``N_ANGLES`` × rings in the band), each ring's
    mean removed so that only the angular pattern is compared."""
    x, _ = _windowed(img)
    power = np.abs(scipy.fft.fft2(x, s=(SPECTRUM_SIDE, SPECTRUM_SIDE), workers=1)) ** 2
    power = np.fft.fftshift(np.log(power + 1e-6 * float(power.mean()) + 1e-30))
    r_max = K_MAX * SPECTRUM_SIDE * WORK_PX
    centre = (SPECTRUM_SIDE // 2, SPECTRUM_SIDE // 2)
    pol = warp_polar(power, center=centre, radius=r_max, output_shape=(N_ANGLES, int(r_max)))
    pol = pol[:, int(K_MIN * SPECTRUM_SIDE * WORK_PX) :]
    return (pol - pol.mean(axis=0, keepdims=True)).astype(np.float32)


def prepare(image: np.ndarray, pixel_size: float, mirror: bool = True) -> Prepared:
    """A frame (any intensity; pixel size in Å/px) ready to be compared; ``mirror``: also the
    spectrum of its mirror image (a query needs it, a candidate not)."""
    img = np.asarray(image, np.float32)
    if img.ndim != 2 or not np.isfinite(img).all():
        raise InputError(f"a frame to compare must be a finite 2-D image, got shape {img.shape}")
    if not 0.005 <= float(pixel_size) <= 2.0:
        raise InputError(f"pixel size {pixel_size} Å/px is outside 0.005-2 Å/px")
    work = ndimage.zoom(img, float(pixel_size) / WORK_PX, order=1)
    if min(work.shape) < MIN_SIDE:
        raise InputError(f"a frame of {img.shape} px at {pixel_size} Å/px is too small to compare")
    spectrum = _polar_spectrum(work)
    return Prepared(work, (spectrum, _polar_spectrum(work[:, ::-1]) if mirror else spectrum))


def _angles(query: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """The ``PEAKS`` best rotations (degrees) of the query onto the candidate."""
    corr = scipy.fft.irfft(
        (scipy.fft.rfft(candidate, axis=0) * np.conj(scipy.fft.rfft(query, axis=0))).sum(axis=1),
        n=N_ANGLES,
    )
    peaks = np.flatnonzero((corr >= np.roll(corr, 1)) & (corr >= np.roll(corr, -1)))
    return peaks[np.argsort(-corr[peaks])][:PEAKS] * (360.0 / N_ANGLES)


def _ncc_at_best_shift(query: np.ndarray, candidate: np.ndarray, spectrum: np.ndarray) -> float:
    """NCC of the windowed query with the candidate at the shift phase correlation finds
    (``spectrum``: the candidate's ``fft2``, computed once for all poses)."""
    q, w = _windowed(query)
    n = min(q.shape[0], *candidate.shape)
    q, w = q[:n, :n], w[:n, :n]
    placed = np.zeros_like(candidate)
    placed[:n, :n] = q
    shift, _, _ = phase_cross_correlation(
        spectrum, scipy.fft.fft2(placed, workers=1), space="fourier", normalization="phase"
    )
    dy, dx = round(float(shift[0])), round(float(shift[1]))
    seen = np.roll(candidate, (-dy, -dx), axis=(0, 1))[:n, :n]
    c = (seen - (seen * w).sum() / w.sum()) * w
    den = float(np.sqrt((q * q).sum() * (c * c).sum()))
    return float((q * c).sum() / den) if den > 0 else 0.0


def match(query: Prepared, candidate: Prepared) -> float:
    """How well the query, turned, mirrored and moved onto the candidate, agrees with it: the
    best normalised cross-correlation over the poses tried (−1…1; 1 for a noiseless copy)."""
    best = -1.0
    spectrum = scipy.fft.fft2(candidate.image, workers=1)
    for mirrored in (False, True):
        q = query.image[:, ::-1] if mirrored else query.image
        for angle in _angles(query.spectra[int(mirrored)], candidate.spectra[0]):
            for turn in (angle, angle + 180.0):
                rotated = ndimage.rotate(q, -turn, reshape=False, order=1, mode="nearest")
                best = max(best, _ncc_at_best_shift(rotated, candidate.image, spectrum))
    return best
