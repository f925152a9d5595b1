"""The crystal a frame shows, measured without the network: Bragg peaks, site translations, sublattices.

Two independent questions decide whether a frame holds a crystal at all:

- **Bragg peaks** in its power spectrum. For noise, vacuum or amorphous film, each Fourier
  coefficient's power, divided by the mean power of its ring (|k| fixed), is exponentially
  distributed (white noise; speckle for amorphous contrast), so the largest of ``M``
  coefficients exceeds ``ln(M / α)`` with probability ``α``. A crystal's reflections stand
  far above that: a frame is a crystal when at least two non-collinear peaks do.
- **Translations of the site lattice**: displacements ``t`` such that nearly every column has
  another column at ``x + t``. A half-translation of a two-sublattice crystal (graphene's
  nearest-neighbour bond) maps at most half the columns onto columns, a true translation all
  but the vacant and the edge ones: a vector is a translation when three quarters of the
  columns that can be checked map onto a column (half-way between the two cases).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

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

    @property
    def found(self) -> bool:
        """Two non-collinear translations: a 2-D lattice."""
        if len(self.vectors) < 2:
            return False
        v = self.vectors / np.linalg.norm(self.vectors, axis=1, keepdims=True)
        return bool((np.abs(v[:, 0][:, None] * v[:, 1][None] - v[:, 1][:, None] * v[:, 0][None]) > 0.5).any())


def bragg_peaks(image: np.ndarray, alpha: float = 1e-3) -> int:
    """Number of independent Bragg reflections (±k counted once) whose power exceeds what noise
    reaches with probability ``alpha`` over the whole spectrum."""
    img = np.asarray(image, np.float64)
    h, w = img.shape
    if min(h, w) < 16:
        return 0
    window = np.hanning(h)[:, None] * np.hanning(w)[None, :]
    power = np.abs(np.fft.rfft2((img - img.mean()) * window)) ** 2
    ky = np.fft.fftfreq(h)[:, None] * h / max(h, w)
    kx = np.fft.rfftfreq(w)[None, :] * w / max(h, w)
    ring = np.rint(np.hypot(ky, kx) * max(h, w)).astype(np.int64)
    valid = (ring >= LOW_FREQUENCY_CYCLES) & (ring < min(h, w) // 2)
    if not valid.any():
        return 0
    # Ring means from the median: robust to the very peaks sought (exponential: mean = median/ln 2).
    rings, values = ring[valid], power[valid]
    order = np.lexsort((values, rings))
    rings, values = rings[order], values[order]
    starts = np.searchsorted(rings, np.arange(ring.max() + 2))
    counts = np.diff(starts)
    medians = np.zeros(ring.max() + 1)
    have = counts > 0
    lo = starts[:-1][have] + (counts[have] - 1) // 2
    hi = starts[:-1][have] + counts[have] // 2
    medians[have] = 0.5 * (values[lo] + values[hi])
    ratio = np.zeros_like(power)
    ratio[valid] = power[valid] / np.maximum(medians[ring[valid]] / np.log(2), 1e-300)
    threshold = np.log(valid.sum() / alpha)
    peaks = np.argwhere(ratio > threshold)
    if len(peaks) == 0:
        return 0
    # Merge neighbouring coefficients of one reflection (the Hann window spreads it over ~3).
    k = np.stack([np.where(peaks[:, 0] > h // 2, peaks[:, 0] - h, peaks[:, 0]), peaks[:, 1]], 1).astype(float)
    order = np.argsort(-ratio[peaks[:, 0], peaks[:, 1]])
    kept: list[np.ndarray] = []
    for i in order:
        if all(np.abs(k[i] - q).max() > 2 and np.abs(k[i] + q).max() > 2 for q in kept):
            kept.append(k[i])
    return len(kept)


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
    candidates = []
    for s in np.atleast_1d(seeds):
        for j in tree.query_ball_point(rowcol[s], 2.5 * sep):
            d = rowcol[j] - rowcol[s]
            if np.linalg.norm(d) > 0.5 * sep:
                candidates.append(d)
    kept: list[np.ndarray] = []
    crystal: list[bool] = []
    tried: list[np.ndarray] = []
    for d in sorted(candidates, key=lambda v: float(np.linalg.norm(v))):
        if any(np.linalg.norm(d - q) < tol for q in tried):
            continue
        tried.append(d)
        if translation_fraction(rowcol, tree, d, shape, tol) >= TRANSLATION_FRACTION:
            kept.append(d)
            crystal.append(translation_fraction(rowcol, tree, d, shape, tol, cls) >= TRANSLATION_FRACTION)
    if not kept:
        return none
    # Refine each vector as the mean displacement it maps, and add the opposite sign.
    vectors, same_class = [], []
    for d, c in zip(kept, crystal, strict=True):
        dist, j = tree.query(rowcol + d, distance_upper_bound=tol)
        ok = np.isfinite(dist)
        v = (rowcol[j[ok]] - rowcol[ok]).mean(axis=0)
        if not any(np.linalg.norm(v - q) < tol for q in vectors):
            vectors.extend([v, -v])
            same_class.extend([c, c])
    vectors_arr = np.array(vectors)
    joining = vectors_arr[np.array(same_class)]
    if len(joining) < 4:  # classes too noisy to name two crystal translations: sites alone
        joining = vectors_arr
    labels = _sublattices(rowcol, tree, joining, tol)
    return SiteLattice(vectors_arr, sep, labels, _expected_class(rowcol, tree, joining, tol, labels, cls))


def translation_fraction(
    rowcol: np.ndarray,
    tree: cKDTree,
    d: np.ndarray,
    shape: tuple[int, int],
    tol: float,
    cls: np.ndarray | None = None,
) -> float:
    """Fraction of columns whose ``x + d`` lies in the frame and holds a column within ``tol``
    (of the same class in ``cls``, when given)."""
    target = rowcol + d
    inside = (target >= tol).all(axis=1) & (target[:, 0] < shape[0] - tol) & (target[:, 1] < shape[1] - tol)
    if inside.sum() < 3:
        return 0.0
    dist, j = tree.query(target[inside], distance_upper_bound=tol)
    hit = np.isfinite(dist)
    if cls is not None:
        hit[hit] = cls[j[hit]] == cls[inside][hit]
    return float(hit.mean())


def _expected_class(
    rowcol: np.ndarray, tree: cKDTree, vectors: np.ndarray, tol: float, labels: np.ndarray, cls: np.ndarray
) -> np.ndarray:
    """Per column, the class most common at its crystal-translation neighbours (−1: none)."""
    votes = np.zeros((len(rowcol), int(cls.max(initial=0)) + 1))
    for v in vectors:
        dist, j = tree.query(rowcol + v, distance_upper_bound=tol)
        ok = np.isfinite(dist)
        np.add.at(votes, (np.flatnonzero(ok), cls[j[ok]].clip(0)), 1.0)
    return np.where(votes.sum(1) > 0, votes.argmax(1), -1).astype(np.int64)


def _sublattices(rowcol: np.ndarray, tree: cKDTree, vectors: np.ndarray, tol: float) -> np.ndarray:
    """Connected components of columns joined by translations: one label per sublattice."""
    parent = np.arange(len(rowcol))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for v in vectors:
        dist, j = tree.query(rowcol + v, distance_upper_bound=tol)
        for i in np.flatnonzero(np.isfinite(dist)):
            a, b = root(i), root(int(j[i]))
            if a != b:
                parent[a] = b
    roots = np.array([root(i) for i in range(len(rowcol))])
    _, labels, counts = np.unique(roots, return_inverse=True, return_counts=True)
    # A column joined to no other is on no sublattice (an adatom, or a false column).
    return np.where(counts[labels] > 1, labels, -1).astype(np.int64)


def empty_sites(
    rowcol: np.ndarray, lattice: SiteLattice, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Sites ``x + t`` that no column occupies, with the number of columns that predict each.

    Returns positions (m, 2) px (mean of the predictions) and support counts (m,). A site
    at least one spacing inside the frame only: at the edge half its neighbours are missing.
    """
    rowcol = np.asarray(rowcol, np.float64).reshape(-1, 2)
    if not lattice.found or len(rowcol) == 0:
        return np.zeros((0, 2)), np.zeros(0, np.int64)
    tol = TOLERANCE * lattice.separation
    tree = cKDTree(rowcol)
    predicted = (rowcol[:, None, :] + lattice.vectors[None]).reshape(-1, 2)
    margin = lattice.separation
    inside = (
        (predicted >= margin).all(1)
        & (predicted[:, 0] < shape[0] - margin)
        & (predicted[:, 1] < shape[1] - margin)
    )
    predicted = predicted[inside]
    # Occupied: a column within half the spacing (a misplaced proposal is still the column;
    # a vacant site's nearest column is a full spacing away).
    dist, _ = tree.query(predicted, distance_upper_bound=0.5 * lattice.separation)
    empty = predicted[~np.isfinite(dist)]
    if len(empty) == 0:
        return np.zeros((0, 2)), np.zeros(0, np.int64)
    # Group predictions of one site (within the tolerance of each other).
    groups = cKDTree(empty).query_ball_point(empty, tol)
    seen = np.zeros(len(empty), bool)
    sites, support = [], []
    for i, g in enumerate(groups):
        if seen[i]:
            continue
        members = [j for j in g if not seen[j]]
        seen[members] = True
        sites.append(empty[members].mean(axis=0))
        support.append(len(members))
    return np.array(sites), np.array(support, np.int64)
