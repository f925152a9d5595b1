"""Candidate probe positions on a survey image and the image patches around them."""

from __future__ import annotations

import numpy as np

from scopeflow.errors import InputError


def candidate_grid(shape: tuple[int, int], stride: int, margin: int) -> np.ndarray:
    """Probe positions (row, col px, int64) on a square grid ``stride`` px apart, ``margin`` px
    inside the frame's edges (so a patch of up to ``2 * margin`` px fits around each)."""
    ny, nx = shape
    if stride < 1 or margin < 0 or 2 * margin >= min(ny, nx):
        raise InputError(f"grid stride {stride} px and margin {margin} px do not fit a {ny}×{nx} px image")
    rows = np.arange(margin, ny - margin, stride)
    cols = np.arange(margin, nx - margin, stride)
    r, c = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([r.ravel(), c.ravel()], axis=1).astype(np.int64)


def extract_patches(image: np.ndarray, rowcol: np.ndarray, size: int) -> np.ndarray:
    """Square patches (n, size, size) float32 centred on integer positions (row, col px).

    The patch of position (r, c) spans rows ``r - size // 2`` to ``r - size // 2 + size - 1``;
    every patch must lie inside the image (choose the grid margin ≥ size // 2).
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise InputError(f"survey image must be 2-D, got shape {img.shape}")
    rc = np.asarray(rowcol, dtype=np.int64).reshape(-1, 2)
    half = size // 2
    top = rc - half
    if len(rc) and (
        (top < 0).any() or (top[:, 0] + size > img.shape[0]).any() or (top[:, 1] + size > img.shape[1]).any()
    ):
        raise InputError(f"patches of {size} px around some positions leave the {img.shape} px image")
    windows = np.lib.stride_tricks.sliding_window_view(img, (size, size))
    return np.ascontiguousarray(windows[top[:, 0], top[:, 1]])


def standardise(patches: np.ndarray) -> np.ndarray:
    """Patches flattened to (n, size²) and scaled to zero mean, unit variance over the whole set.

    One scale for all patches (not per patch) keeps brightness, which is what tells a heavy
    dopant column from the host in Z-contrast images.
    """
    flat = patches.reshape(len(patches), -1).astype(np.float32)
    std = float(flat.std())
    if not np.isfinite(std) or std == 0.0:
        raise InputError("survey patches are constant or not finite: nothing to learn from")
    return (flat - flat.mean()) / std
