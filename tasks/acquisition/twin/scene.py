"""What lies under the probe: atom columns of a sample region, in sample coordinates (Å).

Defects and contamination are fixed in the sample (hashed from the lattice site, the region
and the seed), so the same column is a vacancy in every frame that sees it, whatever the
frame index: a resumed run sees exactly the sample an uninterrupted one saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .lattices import Lattice, column_weight, get_lattice, weight_class

NORMAL, SUBSTITUTED, VACANCY = 0, 1, 2

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def hash_uniform(*keys: np.ndarray | int) -> np.ndarray:
    """Deterministic uniforms in [0, 1) from integer keys (splitmix64 over their mix)."""
    with np.errstate(over="ignore"):
        h = np.uint64(0x9E3779B97F4A7C15)
        for key in keys:
            k = np.asarray(key).astype(np.int64).astype(np.uint64)
            h = (h ^ k) * np.uint64(0xBF58476D1CE4E5B9)
            h = (h ^ (h >> np.uint64(31))) * np.uint64(0x94D049BB133111EB)
            h = h ^ (h >> np.uint64(29))
        return (np.asarray(h & _MASK64) >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class Scene:
    """Columns in a window of the sample.

    ``xy`` in Å (sample coordinates, x right, y down); ``weight`` the Z-contrast weight
    (0 for vacancies); ``kind`` NORMAL, SUBSTITUTED or VACANCY; ``cls`` the intensity class.
    """

    lattice: str
    xy: np.ndarray
    weight: np.ndarray
    kind: np.ndarray
    cls: np.ndarray


def region_rotation(seed: int, lattice: str, region: int) -> float:
    """In-plane rotation of the crystal in a sample region, radians."""
    return float(2.0 * np.pi * hash_uniform(seed, _lattice_key(lattice), region, 7))


def _lattice_key(name: str) -> int:
    return sum((i + 1) * ord(ch) for i, ch in enumerate(name))


def columns_in_window(
    lattice: Lattice | str,
    origin: tuple[float, float],
    size: tuple[float, float],
    *,
    seed: int,
    region: int,
    vacancy_rate: float,
    substitution_rate: float,
) -> Scene:
    """All columns whose positions fall in the window ``origin + [0, size)`` (x, y in Å)."""
    lat = get_lattice(lattice) if isinstance(lattice, str) else lattice
    theta = region_rotation(seed, lat.name, region)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    vectors = lat.vectors() @ rot.T  # rows: rotated a1, a2 (x, y)
    x0, y0 = origin
    w, h = size
    corners = np.array([[x0, y0], [x0 + w, y0], [x0, y0 + h], [x0 + w, y0 + h]])
    frac = corners @ np.linalg.inv(vectors)
    lo = np.floor(frac.min(axis=0)).astype(int) - 1
    hi = np.ceil(frac.max(axis=0)).astype(int) + 1
    n1, n2 = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    n1, n2 = n1.ravel(), n2.ravel()
    lkey = _lattice_key(lat.name)
    parts = []
    for s, site in enumerate(lat.sites):
        cell = np.stack([n1 + site.frac[0], n2 + site.frac[1]], axis=1)
        xy = cell @ vectors
        inside = (xy[:, 0] >= x0) & (xy[:, 0] < x0 + w) & (xy[:, 1] >= y0) & (xy[:, 1] < y0 + h)
        u = hash_uniform(seed, lkey, region, s, n1[inside], n2[inside])
        kind = np.where(
            u < vacancy_rate, VACANCY, np.where(u < vacancy_rate + substitution_rate, SUBSTITUTED, NORMAL)
        )
        weight = np.where(
            kind == SUBSTITUTED, column_weight(site.substitute), column_weight(site.atoms)
        ).astype(np.float32)
        weight[kind == VACANCY] = 0.0
        parts.append((xy[inside], weight, kind.astype(np.int8)))
    xy = np.concatenate([p[0] for p in parts])
    weight = np.concatenate([p[1] for p in parts])
    kind = np.concatenate([p[2] for p in parts])
    return Scene(lat.name, xy, weight, kind, weight_class(weight))


def contamination_points(
    origin: tuple[float, float],
    size: tuple[float, float],
    *,
    seed: int,
    region: int,
    coverage: float,
    rng: np.random.Generator,
    cell: float = 12.0,
    density: float = 0.35,
) -> np.ndarray:
    """Positions (x, y, Å) of amorphous carbon atoms in contamination patches of the window.

    Patches sit on a grid of ``cell`` Å in the sample (one per cell with probability
    ``coverage``, radius from the hash); the atoms inside are drawn anew each frame, as beam
    -mobile hydrocarbon is. ``density`` in atoms/Å² at the patch centre.
    """
    if coverage <= 0:
        return np.empty((0, 2))
    x0, y0 = origin
    w, h = size
    gx = np.arange(np.floor(x0 / cell) - 1, np.ceil((x0 + w) / cell) + 1)
    gy = np.arange(np.floor(y0 / cell) - 1, np.ceil((y0 + h) / cell) + 1)
    cx, cy = (a.ravel() for a in np.meshgrid(gx, gy, indexing="ij"))
    present = hash_uniform(seed, region, 11, cx, cy) < coverage
    cx, cy = cx[present], cy[present]
    if cx.size == 0:
        return np.empty((0, 2))
    jitter_x = hash_uniform(seed, region, 12, cx, cy)
    jitter_y = hash_uniform(seed, region, 13, cx, cy)
    radius = cell * (0.45 + 0.4 * hash_uniform(seed, region, 14, cx, cy))
    centres = np.stack([(cx + jitter_x) * cell, (cy + jitter_y) * cell], axis=1)
    counts = rng.poisson(density * np.pi * radius**2)
    reps = np.repeat(np.arange(len(centres)), counts)
    # Gaussian profile: thick in the middle, thinning towards the rim.
    pts = centres[reps] + rng.normal(size=(reps.size, 2)) * (radius[reps, None] / 1.6)
    keep = (pts[:, 0] >= x0) & (pts[:, 0] < x0 + w) & (pts[:, 1] >= y0) & (pts[:, 1] < y0 + h)
    return pts[keep]
