"""Sub-pixel localisation of synthetic spots at known positions, and the resampling round trip."""

from __future__ import annotations

import numpy as np
import torch

from tasks.inference.peaks import find_peaks
from tasks.inference.resample import scaling_for, to_model_scale


def gaussian_spots(shape: tuple[int, int], rowcol: np.ndarray, sigma: float) -> np.ndarray:
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    image = np.zeros(shape)
    for r, c in rowcol:
        image = np.maximum(image, np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma**2)))
    return image


def test_gaussian_spots_are_found_to_a_hundredth_of_a_pixel() -> None:
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(8, 60, 10.0), np.arange(8, 60, 10.0), indexing="ij"), -1).reshape(
        -1, 2
    )
    truth = grid + rng.uniform(-0.5, 0.5, grid.shape)
    maps = torch.from_numpy(gaussian_spots((64, 64), truth, 1.3))[None]
    idx, rowcol = find_peaks(maps, 0.3, 3)
    assert len(idx) == len(truth)
    found = rowcol.numpy()
    err = np.linalg.norm(found[:, None] - truth[None], axis=2).min(axis=1)
    assert err.max() < 0.01


def test_plateau_gives_one_peak_and_threshold_drops_faint_ones() -> None:
    maps = torch.zeros(1, 16, 16)
    maps[0, 5, 5] = maps[0, 5, 6] = 0.9  # a flat top two pixels wide
    maps[0, 12, 12] = 0.1
    idx, _ = find_peaks(maps, 0.3, 2)
    assert idx.tolist() == [[0, 5, 5]]


def test_resampling_maps_positions_back_to_the_input_pixels() -> None:
    rng = np.random.default_rng(1)
    grid = np.stack(
        np.meshgrid(np.arange(20, 230, 30.0), np.arange(20, 230, 30.0), indexing="ij"), -1
    ).reshape(-1, 2)
    truth = grid + rng.uniform(-5, 5, grid.shape)
    # A frame at 0.06 Å/px with spots 0.25 Å wide, seen by a model at 0.2 Å/px.
    image = gaussian_spots((250, 250), truth, 0.25 / 0.06)
    scaling = scaling_for(image.shape, 0.06, 0.2)
    x = to_model_scale(torch.from_numpy(image).float()[None, None], scaling)[0]
    h, w = scaling.model_shape
    _, rowcol = find_peaks(x[:, :h, :w], 0.5, 2)
    found = scaling.to_input(rowcol.numpy())
    err = np.linalg.norm(found[:, None] - truth[None], axis=2).min(axis=1)
    assert len(found) == len(truth)
    assert np.median(err) < 0.3  # input px: 0.02 model px
    assert np.allclose(scaling.to_model(scaling.to_input(rowcol.numpy())), rowcol.numpy(), atol=1e-4)
