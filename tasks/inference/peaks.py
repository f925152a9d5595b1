"""Sub-pixel peak finding on heatmaps: local maxima, then a three-point Gaussian fit per axis.

A heatmap bump is close to a Gaussian, whose logarithm is a parabola: fitting a parabola
through the logs of the maximum and its two neighbours along each axis gives the centre
exactly for a sampled Gaussian (a parabola on the raw values is biased by up to ~0.1 px).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-6


def local_maxima(maps: torch.Tensor, threshold: float, radius: int) -> torch.Tensor:
    """Indices (n, 3) = (frame, row, col) of maxima of ``maps`` (B, H, W) above ``threshold``.

    A maximum is the largest value in its (2·radius+1)² window (px), so two reported peaks
    are at least ``radius + 1`` px apart along some axis.
    """
    h, w = maps.shape[-2:]
    # A ramp far below any real contrast breaks ties, so a flat top gives one peak, not two:
    # 1e-7 per pixel in raster order within 16×16 tiles (above float32 resolution near 1).
    rows = torch.arange(h, device=maps.device) % 16
    cols = torch.arange(w, device=maps.device) % 16
    ramp = (rows[:, None] * 16 + cols[None, :]).to(maps.dtype) * -1e-7
    ranked = maps + ramp
    # Separable (rows, then columns): the same square window at 2(2r+1) instead of (2r+1)² compares.
    k = 2 * radius + 1
    pooled = F.max_pool2d(ranked[:, None], (1, k), stride=1, padding=(0, radius))
    pooled = F.max_pool2d(pooled, (k, 1), stride=1, padding=(radius, 0))[:, 0]
    return ((ranked >= pooled) & (maps > threshold)).nonzero()


def subpixel_offsets(maps: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Offsets (n, 2) in px, each in [-0.5, 0.5], of the Gaussian centres near ``idx``."""
    if idx.numel() == 0:
        return torch.zeros((0, 2), dtype=maps.dtype, device=maps.device)
    padded = F.pad(maps[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    b, r, c = idx[:, 0], idx[:, 1] + 1, idx[:, 2] + 1
    logs = [
        torch.log(padded[b, r + dr, c + dc].clamp_min(_EPS))
        for dr, dc in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
    ]
    centre, up, down, left, right = logs

    def fit(minus: torch.Tensor, plus: torch.Tensor) -> torch.Tensor:
        curvature = minus - 2.0 * centre + plus
        shift = (
            0.5 * (minus - plus) / torch.where(curvature < -_EPS, curvature, torch.full_like(curvature, -1.0))
        )
        return torch.where(curvature < -_EPS, shift, torch.zeros_like(shift)).clamp(-0.5, 0.5)

    return torch.stack([fit(up, down), fit(left, right)], dim=1)


def find_peaks(maps: torch.Tensor, threshold: float, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Peaks of ``maps`` (B, H, W): integer indices (n, 3) and sub-pixel (row, col) (n, 2) in px."""
    idx = local_maxima(maps, threshold, radius)
    rowcol = idx[:, 1:].to(maps.dtype) + subpixel_offsets(maps, idx)
    return idx, rowcol
