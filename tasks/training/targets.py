"""Training targets: a Gaussian bump per atom column (a channel per class), and sub-pixel offsets."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def heatmaps(
    shape: tuple[int, int], rowcol: np.ndarray, cls: np.ndarray, n_classes: int, sigma: float
) -> np.ndarray:
    """(n_classes, H, W) float32 maps: ``exp(-d²/2σ²)`` around each column (px), max where bumps overlap.

    ``rowcol`` (n, 2) in px of the map; ``cls`` (n,) class per column; ``sigma`` in px.
    """
    h, w = shape
    out = np.zeros((n_classes, h * w), np.float32)
    if len(rowcol) == 0:
        return out.reshape(n_classes, h, w)
    reach = int(np.ceil(3.0 * sigma))
    d = np.arange(-reach, reach + 1)
    dr, dc = (a.ravel() for a in np.meshgrid(d, d, indexing="ij"))
    base = np.floor(rowcol + 0.5).astype(np.int64)
    rr = base[:, :1] + dr[None]
    cc = base[:, 1:] + dc[None]
    values = np.exp(-((rr - rowcol[:, :1]) ** 2 + (cc - rowcol[:, 1:]) ** 2) / (2.0 * sigma**2)).astype(
        np.float32
    )
    ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    chan = np.broadcast_to(np.asarray(cls, np.int64)[:, None], rr.shape)
    np.maximum.at(out, (chan[ok], (rr * w + cc)[ok]), values[ok])
    return out.reshape(n_classes, h, w)


def offsets(shape: tuple[int, int], rowcol: np.ndarray, reach: float = 1.5) -> np.ndarray:
    """(2, H, W) float32: (row, col) from each pixel centre to its nearest column, in px.

    NaN where no column lies within ``reach`` px: there the offset is not trained.
    """
    h, w = shape
    out = np.full((2, h, w), np.nan, np.float32)
    if len(rowcol) == 0:
        return out
    grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), axis=-1).reshape(-1, 2)
    dist, nearest = cKDTree(rowcol).query(grid, distance_upper_bound=reach)
    near = np.isfinite(dist)
    delta = rowcol[nearest[near]] - grid[near]
    out.reshape(2, -1)[:, near] = delta.T
    return out


def targets(
    shape: tuple[int, int], rowcol: np.ndarray, cls: np.ndarray, n_classes: int, sigma: float
) -> np.ndarray:
    """The full training target (n_classes + 2, H, W): ``heatmaps`` then ``offsets``."""
    return np.concatenate([heatmaps(shape, rowcol, cls, n_classes, sigma), offsets(shape, rowcol)])
