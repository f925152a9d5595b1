"""Physics proxies of a frame's located columns: how many per Å², and how regular their spacing.

A crystal imaged well gives a steady column density and nearest-neighbour distances
clustered at the lattice spacing; a network failing under drift misses columns (density
falls), invents them (density rises) or places them off-lattice (spacing scatters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

EDGE_MARGIN = 2.0  # Å: columns this close to the border have half their neighbours outside


@dataclass(frozen=True)
class Proxies:
    """Per-frame proxies: ``density`` columns/Å², ``nn_distance`` median in Å, ``irregularity``
    the fraction of columns whose nearest neighbour is off the median by more than 20%."""

    density: float
    nn_distance: float
    irregularity: float


def frame_proxies(rowcol: np.ndarray, shape: tuple[int, int], pixel_size: float) -> Proxies:
    """Proxies of columns at ``rowcol`` (px) in a frame of ``shape`` px at ``pixel_size`` Å/px."""
    rowcol = np.asarray(rowcol, dtype=np.float64).reshape(-1, 2)
    area = shape[0] * shape[1] * pixel_size**2
    if len(rowcol) < 3:
        return Proxies(len(rowcol) / area, float("nan"), 1.0)
    xy = rowcol * pixel_size
    dist, _ = cKDTree(xy).query(xy, k=2)
    nn = dist[:, 1]
    margin = EDGE_MARGIN
    inner = (
        (xy[:, 0] > margin)
        & (xy[:, 1] > margin)
        & (xy[:, 0] < shape[0] * pixel_size - margin)
        & (xy[:, 1] < shape[1] * pixel_size - margin)
    )
    nn_inner = nn[inner] if inner.sum() >= 3 else nn
    median = float(np.median(nn_inner))
    irregular = float(np.mean(np.abs(nn_inner - median) > 0.2 * median))
    return Proxies(len(rowcol) / area, median, irregular)


def proxy_score(p: Proxies, reference: Proxies) -> float:
    """One scalar deviation from the reference proxies (0 when they agree; ~1 per 100% change)."""
    density = abs(np.log(max(p.density, 1e-6) / max(reference.density, 1e-6)))
    spacing = abs(p.nn_distance / reference.nn_distance - 1.0) if np.isfinite(p.nn_distance) else 1.0
    return float(density + spacing + max(p.irregularity - reference.irregularity, 0.0))


def columns_proxies(
    rowcols: Sequence[np.ndarray], frames: Sequence[np.ndarray], pixel_size: float
) -> Proxies:
    """Median proxies of columns ``rowcols[i]`` (px) found on ``frames[i]``, all at ``pixel_size`` Å/px."""
    return median_proxies(
        [frame_proxies(rc, np.shape(f), pixel_size) for rc, f in zip(rowcols, frames, strict=True)]
    )


def median_proxies(items: list[Proxies]) -> Proxies:
    """Element-wise median of proxies (the reference of a stretch of frames)."""
    arr = np.array([[p.density, p.nn_distance, p.irregularity] for p in items], dtype=np.float64)
    # Frames without columns (no lattice in them) have no spacing: the median is over the rest.
    finite = np.isfinite(arr)
    med = np.array(
        [np.median(col[ok]) if ok.any() else np.nan for col, ok in zip(arr.T, finite.T, strict=True)]
    )
    return Proxies(float(med[0]), float(med[1]), float(med[2]))
