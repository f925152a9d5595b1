"""Frames of any pixel size to the model's scale and back.

The network was trained at one pixel size (``model_pixel_size``, Å/px). A frame at
``pixel_size`` Å/px is resampled (bilinear, antialiased when shrinking) to
``round(side · pixel_size / model_pixel_size)`` pixels per side, normalised, and padded
to a multiple of 8. With ``align_corners=False`` sampling, model pixel ``m`` covers input
pixels around ``(m + 0.5) · s − 0.5`` where ``s = input side / model side``: that maps
coordinates back exactly, whatever the rounding of the sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from scopeflow.errors import InputError

from .network import MULTIPLE

MIN_PIXEL_SIZE = 0.05  # Å/px: the range the models are trained for
MAX_PIXEL_SIZE = 0.3


@dataclass(frozen=True)
class Scaling:
    """How a frame of ``shape`` (input px) maps onto ``model_shape`` (model px, before padding)."""

    shape: tuple[int, int]
    model_shape: tuple[int, int]

    @property
    def factor(self) -> tuple[float, float]:
        """Input pixels per model pixel along rows and columns."""
        return (self.shape[0] / self.model_shape[0], self.shape[1] / self.model_shape[1])

    def to_input(self, rowcol: np.ndarray) -> np.ndarray:
        """Model-pixel (row, col) → input-pixel (row, col)."""
        f = np.asarray(self.factor, dtype=np.float64)
        return ((np.asarray(rowcol, np.float64) + 0.5) * f - 0.5).astype(np.float32)

    def to_model(self, rowcol: np.ndarray) -> np.ndarray:
        """Input-pixel (row, col) → model-pixel (row, col)."""
        f = np.asarray(self.factor, dtype=np.float64)
        return ((np.asarray(rowcol, np.float64) + 0.5) / f - 0.5).astype(np.float32)


def check_pixel_size(pixel_size: float) -> float:
    """``pixel_size`` as a float, or an ``InputError`` outside 0.05–0.3 Å/px."""
    p = float(pixel_size)
    if not np.isfinite(p) or not MIN_PIXEL_SIZE * 0.999 <= p <= MAX_PIXEL_SIZE * 1.001:
        raise InputError(
            f"pixel size {pixel_size} Å/px is outside the range the models handle "
            f"({MIN_PIXEL_SIZE}–{MAX_PIXEL_SIZE} Å/px)"
        )
    return p


def scaling_for(shape: tuple[int, int], pixel_size: float, model_pixel_size: float) -> Scaling:
    """The model-scale shape of a frame of ``shape`` px at ``pixel_size`` Å/px."""
    ratio = pixel_size / model_pixel_size
    model_shape = (max(MULTIPLE, round(shape[0] * ratio)), max(MULTIPLE, round(shape[1] * ratio)))
    return Scaling((int(shape[0]), int(shape[1])), model_shape)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit standard deviation per frame (B, 1, H, W): the scale of counts is arbitrary."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return (x - mean) / std


def to_model_scale(frames: torch.Tensor, scaling: Scaling, border: int = 0) -> torch.Tensor:
    """Frames (B, 1, H, W) in counts → normalised (B, 1, H', W') at the model scale, padded to ×8.

    Padding reflects the frame: ``border`` px on every side (a column cut by the frame's edge
    becomes a whole peak, with its mirror image), then bottom and right up to a multiple of 8.
    Model pixel (r, c) of the frame is at (r + border, c + border) of the result.
    """
    if frames.shape[-2:] != scaling.shape:
        raise InputError(
            f"frames of shape {tuple(frames.shape[-2:])} do not match the scaling for {scaling.shape}"
        )
    x = frames.float()
    if scaling.model_shape != scaling.shape:
        shrink = scaling.model_shape[0] < scaling.shape[0]
        x = F.interpolate(x, size=scaling.model_shape, mode="bilinear", align_corners=False, antialias=shrink)
    x = normalise(x)
    h, w = scaling.model_shape
    ph, pw = (-(h + 2 * border)) % MULTIPLE, (-(w + 2 * border)) % MULTIPLE
    if border or ph or pw:
        mode = "reflect" if max(ph, pw) + border < min(h, w) else "replicate"
        x = F.pad(x, (border, border + pw, border, border + ph), mode=mode)
    return x
