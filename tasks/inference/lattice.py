"""The crystal a frame shows, measured without the network: Bragg peaks, site translations, sublattices.

Whether a frame holds a crystal at all, and where its sites are:

- **Bragg reflections** in its power spectrum. For noise, vacuum or amorphous film, each
  Fourier coefficient's power, divided by the mean power at its |k|, is exponentially
  distributed (white noise; speckle for amorphous contrast), so the largest of ``M``
  coefficients exceeds ``ln(M / α)`` with probability ``α``. A crystal's reflections stand
  far above that. The proposed columns must **carry** them (``carried_reflections``): a
  frame is a crystal when its columns add up in phase at two non-collinear reflections.
- **Translations of the site lattice**: displacements ``t`` such that nearly every column has
  another column at ``x + t``. A half-translation of a two-sublattice crystal (graphene's
  nearest-neighbour bond) maps at most half the columns onto columns, a true translation all
  but the vacant and the edge ones: a vector is a translation when three quarters of the
  columns that can be checked map onto a column (half-way between the two cases).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy.ndimage import median_filter
from scipy.spatial import cKDTree
from scipy.stats import gamma

from .kernels import kernels, nearest_within
from .refine import spacing

TRANSLATION_FRACTION = 0.75  # see the module docstring: between 1/2 (half-translation) and 1
TOLERANCE = 0.25  # a column "at" a site: within this fraction of the column spacing
LOW_FREQUENCY_CYCLES = 4  # periods longer than a quarter of the frame are contrast, not lattice


@dataclass(frozen=True)
class SiteLattice:
    """Translations ``vectors`` (k, 2) px of a frame's column sites (both signs), the column
    ``separation`` (px); per column its ``sublattice`` label (−1: on none) and the intensity
    class its sublattice holds (``expected_class``, −1 unknown). Sublattices are joined by
    the crystal's translations: those that also map each column onto one of its own class
    (perovskite's half-cell steps map every site onto a site, but strontium onto oxygen)."""

    vectors: np.ndarray
    separation: float
    sublattice: np.ndarray
    expected_class: np.ndarray
    # Per vector: whether it maps columns onto columns of their own class (None: unknown).
    keeps_class: np.ndarray | None = None

    @functools.cached_property
    def found(self) -> bool:
        """Two non-collinear translations: a 2-D lattice (asked a dozen times a frame: kept)."""
        return independent(self.vectors)


def bragg_reflections(image: np.ndarray, alpha: float = 1e-3, most: int = 64) -> np.ndarray:
    """Spatial frequencies (m, 2) in cycles/px (row, col) of the frame's reflections whose power
    exceeds what noise reaches with probability ``alpha`` over the whole spectrum; ±k once,
    strongest first, at most ``most``."""
    img = np.asarray(image, np.float64)
    h, w = img.shape
    if min(h, w) < 16:
        return np.zeros((0, 2))
    return _reflections(periodic_power(img), (h, w), 1, alpha, most)


def pooled_reflections(images: Sequence[np.ndarray], alpha: float = 1e-3, most: int = 64) -> np.ndarray:
    """``bragg_reflections`` of several frames of one shape together: their power spectra
    averaged, so a lattice that drifts under the probe (a translation changes only phases)
    adds up while the noise averages down (``averaged_reflections``)."""
    frames = [np.asarray(img, np.float64) for img in images]
    if not frames or any(f.shape != frames[0].shape for f in frames):
        return np.zeros((0, 2))
    return averaged_reflections([periodic_power(f) for f in frames], frames[0].shape, alpha, most)


def averaged_reflections(
    spectra: Sequence[np.ndarray],
    shape: tuple[int, ...],
    alpha: float = 1e-3,
    most: int = 64,
    tiles: int = 1,
) -> np.ndarray:
    """The reflections of the mean of ``spectra`` (``periodic_power`` of distinct frames of
    ``shape``; each the mean of ``tiles`` such spectra of distinct tiles of ``shape`` px), as
    ``bragg_reflections``. The threshold is the mean of n unit exponentials' (a Gamma(n, 1/n)
    tail at ``alpha`` over the spectrum, n = spectra × tiles), so noise passes as rarely as
    for one frame: provided the frames' noise is independent (no frame counted twice)."""
    if not len(spectra) or min(shape) < 16:
        return np.zeros((0, 2))
    power = spectra[0] if len(spectra) == 1 else np.mean(spectra, axis=0)
    return _reflections(power, shape, len(spectra) * tiles, alpha, most)


@functools.lru_cache(maxsize=64)
def _noise_levels(frames: int, tested: int, alpha: float) -> tuple[float, float]:
    """For a periodogram averaged over ``frames`` frames (noise: the mean of n unit exponentials,
    Gamma(n, 1/n)): its median over its mean (ln 2 for one frame), and the level of power over
    its mean that noise exceeds with probability ``alpha`` over ``tested`` coefficients
    (ln(tested / alpha) for one frame)."""
    return (
        float(gamma.median(frames, scale=1.0 / frames)),
        float(gamma.isf(alpha / max(tested, 1), frames, scale=1.0 / frames)),
    )


def _reflections(
    power: np.ndarray, shape: tuple[int, ...], frames: int, alpha: float, most: int
) -> np.ndarray:
    """The reflections of the periodic power spectrum (``rfft2`` grid) of ``shape`` frames,
    averaged over ``frames`` of them."""
    h, w = int(shape[0]), int(shape[1])
    none = np.zeros((0, 2))
    radius, ring, band = _rings(h, w)
    # Power more than 1e-12 below the spectrum's peak is floating-point round-off (noise-free
    # smooth images fall that far), not signal: its statistics are not the noise's.
    valid = band & (power > 1e-12 * power.max())
    if not valid.any():
        return none
    median_over_mean, threshold = _noise_levels(frames, int(valid.sum()), alpha)
    # Ring means from the median: robust to the very peaks sought (exponential: mean = median/ln 2).
    count, lower, upper = kernels().ring_medians(ring[valid], power[valid], int(ring.max()) + 1)
    have = np.flatnonzero(count > 0)
    log_mean = np.log(np.maximum(0.5 * (lower[have] + upper[have]) / median_over_mean, 1e-300))
    # Interpolated at each coefficient's own |k|: a steep spectrum (smooth contrast) changes
    # by a large factor across one ring, and its inner edge would pass for peaks.
    expected = np.exp(np.interp(radius[valid], have.astype(np.float64), log_mean))
    ratio = np.zeros_like(power)
    ratio[valid] = power[valid] / expected
    # The two axes carry what is left of the frame's edges (kinks of a smooth image leak a
    # ridge of power along them): there the expectation is the running median along the axis,
    # against which a reflection on the axis is still an isolated peak.
    for line in (np.s_[0, :], np.s_[:, 0]):
        values = power[line]
        level = median_filter(values, size=9, mode="wrap" if line[0] == slice(None) else "nearest")
        ratio[line] = np.where(valid[line], values / np.maximum(level / median_over_mean, 1e-300), 0.0)
    peaks = np.argwhere(ratio > threshold)
    if len(peaks) == 0:
        return none
    # Merge neighbouring coefficients of one reflection (a lattice not commensurate with the
    # frame spreads it over a few).
    k = np.stack([np.where(peaks[:, 0] > h // 2, peaks[:, 0] - h, peaks[:, 0]), peaks[:, 1]], 1).astype(float)
    order = np.argsort(-ratio[peaks[:, 0], peaks[:, 1]])
    kept = kernels().merge_peaks(k, order, int(most))
    return _centroids(ratio, kept, h) / np.array([h, w], float)


def _centroids(ratio: np.ndarray, peaks: np.ndarray, h: int) -> np.ndarray:
    """Each peak (row signed, col; coefficients of the ``rfft2`` grid) moved to the centroid of
    its 3×3 neighbourhood's excess power over the noise (``ratio`` − 1, floored at 0). A lattice
    not commensurate with the frame falls between coefficients; at the nearest one the columns'
    own sum ``carried_reflections`` tests loses up to half a cycle of phase across the frame
    (its power to ~0.4): a small low-dose frame's columns then carried one reflection of three."""
    return kernels().centroids(
        np.ascontiguousarray(ratio, np.float64), np.asarray(peaks, np.float64).reshape(-1, 2)
    )


def noise_limited(image: np.ndarray, power: np.ndarray | None = None) -> bool:
    """Whether the frame's finest detail is noise: its power spectrum is flat (within a factor
    of two) between 0.6–0.75 and 0.85–1 of the Nyquist frequency, as shot and detector noise
    are. Only then does ``bragg_reflections``' noise model hold without columns to confirm it
    (a noise-free smooth image falls by orders of magnitude there). ``power``: the frame's
    ``periodic_power`` if already taken."""
    h, w = np.shape(image)
    if min(h, w) < 16:
        return False
    if power is None:
        power = periodic_power(np.asarray(image, np.float64))
    ky = np.fft.fftfreq(h)[:, None] * 2
    kx = np.fft.rfftfreq(w)[None, :] * 2
    nyquist = np.broadcast_to(np.hypot(ky, kx), power.shape)  # 1 at the Nyquist frequency
    inner = np.median(power[(nyquist >= 0.6) & (nyquist < 0.75)])
    outer = np.median(power[(nyquist >= 0.85) & (nyquist <= 1.0)])
    return bool(inner > 0 and outer >= 0.5 * inner)


def carried_reflections(rowcol: np.ndarray, reflections: np.ndarray, alpha: float = 1e-3) -> np.ndarray:
    """The ``reflections`` (m, 2) cycles/px that the columns at ``rowcol`` (n, 2) px carry.

    Columns on a lattice add up in phase at its reflections: ``n·|mean exp(2πi k·x)|²`` is
    large (a quarter of n even for graphene's two sublattices), while for positions unrelated
    to the reflection it is exponentially distributed with mean 1. So a reflection is carried
    when that exceeds what chance gives with probability ``alpha`` over the m reflections
    tested. The image's own periodicity and the proposed columns must agree: a spectrum
    fooled by noise-free smooth contrast does not have columns on its "reflections".
    """
    x = np.asarray(rowcol, np.float64).reshape(-1, 2)
    k = np.asarray(reflections, np.float64).reshape(-1, 2)
    if len(x) < 3 or len(k) == 0:
        return np.zeros((0, 2))
    phase = np.exp(2j * np.pi * (x @ k.T))  # (n, m)
    power = len(x) * np.abs(phase.mean(axis=0)) ** 2
    return k[power > np.log(len(k) / alpha)]


def independent(vectors: np.ndarray) -> bool:
    """Whether ``vectors`` (m, 2) hold two non-collinear ones (a 2-D lattice)."""
    v = np.asarray(vectors, np.float64).reshape(-1, 2)
    if len(v) < 2:
        return False
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    return bool((np.abs(v[:, 0][:, None] * v[:, 1][None] - v[:, 1][:, None] * v[:, 0][None]) > 0.5).any())


@functools.lru_cache(maxsize=8)
def _rings(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per coefficient of an (h, w) frame's ``rfft2``: |k| in cycles per frame (of its longer
    side), that rounded (its ring), and whether the ring is in the band searched for
    reflections. The same for every frame of a shape: made once (read-only)."""
    ky = np.fft.fftfreq(h)[:, None] * h / max(h, w)
    kx = np.fft.rfftfreq(w)[None, :] * w / max(h, w)
    radius = np.hypot(ky, kx) * max(h, w)
    ring = np.rint(radius).astype(np.int64)
    band = (ring >= LOW_FREQUENCY_CYCLES) & (ring < min(h, w) // 2)
    for a in (radius, ring, band):
        a.flags.writeable = False
    return radius, ring, band


@functools.lru_cache(maxsize=8)
def _poisson_denominator(h: int, w: int) -> np.ndarray:
    """The discrete Laplacian's eigenvalues on the ``rfft2`` grid of an (h, w) frame (1 at k = 0)."""
    q = np.cos(2 * np.pi * np.arange(h) / h)[:, None]
    r = np.cos(2 * np.pi * np.arange(w // 2 + 1) / w)[None, :]
    denom = 2 * q + 2 * r - 4
    denom[0, 0] = 1.0
    denom.flags.writeable = False
    return denom


@functools.lru_cache(maxsize=16)
def _phases(n: int, count: int) -> np.ndarray:
    """exp(2πi k/n) for k = 0..count−1 (read-only)."""
    out = np.exp(2j * np.pi * np.arange(count) / n)
    out.flags.writeable = False
    return out


def periodic_power(image: np.ndarray) -> np.ndarray:
    """Power spectrum (``rfft2`` grid) of the periodic component of ``image`` less its mean
    (Moisan's periodic-plus-smooth decomposition).

    A frame is not periodic: its edges' jumps put a cross of power along both axes of the
    spectrum. A window hides the cross but leaks a steep spectrum's low frequencies over the
    high ones (noise-free smooth contrast then shows hundreds of "peaks"); removing the
    smooth component that carries the jumps does neither. The smooth component's transform
    is the edges' jumps' divided by the Laplacian's eigenvalues, subtracted in Fourier space.
    """
    h, w = image.shape
    # The jumps lie on the first and last rows and columns only (a on row 0 and −a on row h−1;
    # b on column 0 and −b on column w−1): their 2-D transform is two outer products of 1-D
    # ones, formed in the compiled loop that takes the power. (scipy's pocketfft: 3.5× numpy's
    # for a 256² frame here, the same coefficients.)
    return kernels().periodic_power(
        scipy.fft.rfft2(image),
        scipy.fft.rfft(image[-1, :] - image[0, :]),
        scipy.fft.fft(image[:, -1] - image[:, 0]),
        _phases(h, h),
        _phases(w, w // 2 + 1),
        _poisson_denominator(h, w),
    )


def site_lattice(rowcol: np.ndarray, shape: tuple[int, int], cls: np.ndarray | None = None) -> SiteLattice:
    """Translations of the column sites in ``rowcol`` (n, 2) px of a frame of ``shape``;
    ``cls`` (n,) the columns' intensity classes (for the sublattices)."""
    rowcol = np.asarray(rowcol, np.float64).reshape(-1, 2)
    cls = np.zeros(len(rowcol), np.int64) if cls is None else np.asarray(cls, np.int64)
    sep = spacing(rowcol)
    none = SiteLattice(
        np.zeros((0, 2)), sep, np.full(len(rowcol), -1, np.int64), np.full(len(rowcol), -1, np.int64)
    )
    if len(rowcol) < 6 or not np.isfinite(sep):
        return none
    tree = cKDTree(rowcol)
    tol = TOLERANCE * sep
    # Candidates: displacements from the columns nearest the frame's centre to their
    # neighbours out to 2.5 spacings (any 2-D lattice has two translations that short).
    centre = np.array(shape, float) / 2
    _, seeds = tree.query(centre, k=min(4, len(rowcol)))
    seeds = np.atleast_1d(seeds)
    near = tree.query_ball_point(rowcol[seeds], 2.5 * sep, return_sorted=True)
    candidates = np.concatenate(
        [rowcol[np.asarray(j, np.int64)] - rowcol[s] for s, j in zip(seeds, near, strict=True)]
    ).reshape(-1, 2)
    length = np.linalg.norm(candidates, axis=1)
    candidates = candidates[length > 0.5 * sep]
    candidates = candidates[np.argsort(length[length > 0.5 * sep], kind="stable")]
    # Shortest first; a candidate within ``tol`` of one already tried is the same translation.
    close = np.linalg.norm(candidates[:, None] - candidates[None], axis=2) < tol
    taken = np.zeros(len(candidates), bool)
    for i in range(len(candidates)):
        taken[i] = not (close[i] & taken).any()
    tried = candidates[taken]
    if not len(tried):
        return none
    fractions = translation_fractions(rowcol, rowcol, tried, shape, tol, cls)
    translation = fractions[:, 0] >= TRANSLATION_FRACTION
    kept = tried[translation]
    crystal = list(fractions[translation, 1] >= TRANSLATION_FRACTION)
    if not len(kept):
        return none
    # Refine each vector as the mean displacement it maps, and add the opposite sign.
    hit, j = translation_hits(rowcol, rowcol, kept, tol)
    vectors, same_class = [], []
    for k, c in enumerate(crystal):
        ok = hit[k]
        v = (rowcol[j[k, ok]] - rowcol[ok]).mean(axis=0)
        if not any(np.linalg.norm(v - q) < tol for q in vectors):
            vectors.extend([v, -v])
            same_class.extend([c, c])
    vectors_arr = np.array(vectors)
    joining = vectors_arr[np.array(same_class)]
    if len(joining) < 4:  # classes too noisy to name two crystal translations: sites alone
        joining = vectors_arr
    hit, j = translation_hits(rowcol, rowcol, joining, tol)
    labels = _sublattices(hit, j)
    return SiteLattice(
        vectors_arr,
        sep,
        labels,
        _expected_class(hit, j, cls),
        np.array(same_class, bool),
    )


def translation_hits(
    rowcol: np.ndarray, points: np.ndarray, vectors: np.ndarray, tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``vectors`` (k, 2) px and point ``x`` of ``rowcol`` (n, 2) px: whether one of
    ``points`` (m, 2) px lies within ``tol`` px of ``x + v``, and which (nearest), each (k, n)."""
    dist, j = nearest_within(points, (rowcol[None] + vectors[:, None]).reshape(-1, 2), tol)
    shape = (len(vectors), len(rowcol))
    return np.isfinite(dist).reshape(shape), j.reshape(shape)


def translation_fractions(
    rowcol: np.ndarray,
    points: np.ndarray,
    vectors: np.ndarray,
    shape: tuple[int, int],
    tol: float,
    cls: np.ndarray,
) -> np.ndarray:
    """Per vector ``d`` of ``vectors`` (m, 2): the fraction of columns whose ``x + d`` lies in the
    frame and holds one of ``points`` (the columns, (n, 2) px) within ``tol`` (column 0), and one
    of the same class in ``cls`` (column 1); 0 where fewer than three columns can be checked."""
    target = rowcol[None] + vectors[:, None]  # (m, n, 2)
    inside = (
        (target >= tol).all(axis=2) & (target[..., 0] < shape[0] - tol) & (target[..., 1] < shape[1] - tol)
    )
    dist, j = nearest_within(points, target.reshape(-1, 2), tol)
    hit = np.isfinite(dist).reshape(inside.shape) & inside
    same = hit & (cls[np.minimum(j, len(cls) - 1)].reshape(inside.shape) == cls[None])
    checked = inside.sum(1)
    out = np.stack([hit.sum(1), same.sum(1)], 1) / np.maximum(checked, 1)[:, None]
    return np.where(checked[:, None] >= 3, out, 0.0)


def _expected_class(hit: np.ndarray, j: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """Per column, the class most common at its crystal-translation neighbours (−1: none);
    ``hit``, ``j`` (k, n): ``translation_hits`` of the columns by those translations."""
    votes = np.zeros((hit.shape[1], int(cls.max(initial=0)) + 1))
    source = np.broadcast_to(np.arange(hit.shape[1]), hit.shape)
    np.add.at(votes, (source[hit], cls[j[hit]].clip(0)), 1.0)
    return np.where(votes.sum(1) > 0, votes.argmax(1), -1).astype(np.int64)


def _sublattices(hit: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected components of columns joined by translations: one label per sublattice
    (``hit``, ``j`` (k, n): ``translation_hits`` of the columns by the translations)."""
    n = hit.shape[1]
    source = np.broadcast_to(np.arange(n), hit.shape)
    labels = kernels().components(n, np.ascontiguousarray(source[hit]), np.ascontiguousarray(j[hit]))
    counts = np.bincount(labels)
    # A column joined to no other is on no sublattice (an adatom, or a false column).
    return np.where(counts[labels] > 1, labels, -1).astype(np.int64)


def empty_sites(
    rowcol: np.ndarray, lattice: SiteLattice, shape: tuple[int, int], margin: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Sites ``x + t`` that no column occupies, with the number of columns that predict each.

    Returns positions (m, 2) px (mean of the predictions) and support counts (m,), of sites
    at least ``margin`` px inside the frame.
    """
    rowcol = np.asarray(rowcol, np.float64).reshape(-1, 2)
    if not lattice.found or len(rowcol) == 0:
        return np.zeros((0, 2)), np.zeros(0, np.int64)
    tol = TOLERANCE * lattice.separation
    predicted = (rowcol[:, None, :] + lattice.vectors[None]).reshape(-1, 2)
    inside = (
        (predicted >= margin).all(1)
        & (predicted[:, 0] < shape[0] - margin)
        & (predicted[:, 1] < shape[1] - margin)
    )
    predicted = predicted[inside]
    # Occupied: a column within half the spacing (a misplaced proposal is still the column;
    # a vacant site's nearest column is a full spacing away).
    dist, _ = nearest_within(rowcol, predicted, 0.5 * lattice.separation)
    empty = predicted[~np.isfinite(dist)]
    if len(empty) == 0:
        return np.zeros((0, 2)), np.zeros(0, np.int64)
    site = _one_per_site(empty, tol)
    count = np.bincount(site)
    return _site_means(empty, site, count), count.astype(np.int64)


def _one_per_site(predicted: np.ndarray, tol: float) -> np.ndarray:
    """Predictions (m, 2) px grouped by the site they predict: those within ``tol`` px of a
    first one not yet grouped join it. Returns each prediction's site (0, 1, ... in order of
    the sites' first predictions)."""
    return kernels().first_groups(np.ascontiguousarray(predicted, np.float64), float(tol))


def _site_means(predicted: np.ndarray, site: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Mean (sites, 2) px of the predictions (m, 2) of each site (``_one_per_site``)."""
    sums = [np.bincount(site, weights=predicted[:, k], minlength=len(count)) for k in range(2)]
    return np.stack(sums, 1) / count[:, None]


def beyond_edge(
    rowcol: np.ndarray, lattice: SiteLattice, shape: tuple[int, int], reach: float
) -> tuple[np.ndarray, np.ndarray]:
    """Sites of the lattice just outside the frame: within ``reach`` px of its edge, where
    a column's tails still fall inside. Returns positions (m, 2) px and each site's species
    (the class the lattice puts there, −1 unknown).

    A site is ``x + t`` for a column ``x`` on a sublattice and a translation ``t`` that keeps
    the class (so that the site's species is the column's); any translation when the classes
    are too noisy to tell. Predictions of one site are merged.
    """
    rowcol = np.asarray(rowcol, np.float64).reshape(-1, 2)
    none = np.zeros((0, 2)), np.zeros(0, np.int64)
    if not lattice.found or len(rowcol) == 0:
        return none
    keeps = lattice.keeps_class
    vectors = lattice.vectors if keeps is None or keeps.sum() < 4 else lattice.vectors[keeps]
    on = lattice.sublattice >= 0
    source = np.repeat(np.flatnonzero(on), len(vectors))
    predicted = (rowcol[on][:, None, :] + vectors[None]).reshape(-1, 2)
    limit = np.array(shape, np.float64) - 1
    out = (predicted < 0).any(1) | (predicted > limit).any(1)
    near = (predicted > -reach).all(1) & (predicted < limit + reach).all(1)
    keep = out & near
    predicted, source = predicted[keep], source[keep]
    if len(predicted) == 0:
        return none
    # A column proposed just inside the edge is the site itself (as in ``empty_sites``).
    taken = np.isfinite(nearest_within(rowcol, predicted, 0.5 * lattice.separation)[0])
    predicted, source = predicted[~taken], source[~taken]
    if len(predicted) == 0:
        return none
    tol = TOLERANCE * lattice.separation
    # An outside site is predicted by each of its in-frame translation neighbours: merge them.
    site = _one_per_site(predicted, tol)
    count = np.bincount(site)
    # Each site's species: the class most of its predicting columns' sublattices hold.
    votes = np.zeros((len(count), int(lattice.expected_class.max(initial=-1)) + 2))
    np.add.at(votes, (site, lattice.expected_class[source] + 1), 1)
    return _site_means(predicted, site, count), (votes.argmax(1) - 1).astype(np.int64)


def predicted_by(positions: np.ndarray, columns: np.ndarray, lattice: SiteLattice) -> np.ndarray:
    """How many of ``columns`` (m, 2) px a lattice translation carries to within the tolerance
    of each of ``positions`` (n, 2) px: the support of a site by the columns around it."""
    positions = np.asarray(positions, np.float64).reshape(-1, 2)
    columns = np.asarray(columns, np.float64).reshape(-1, 2)
    count = np.zeros(len(positions), np.int64)
    if not lattice.found or not len(positions) or not len(columns):
        return count
    hit, j = translation_hits(columns, positions, lattice.vectors, TOLERANCE * lattice.separation)
    return np.bincount(j[hit], minlength=len(positions)).astype(np.int64)
