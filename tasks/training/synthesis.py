"""Training samples from the digital twin, prepared exactly as inference prepares frames.

A sample is one twin frame under drawn conditions, at its own pixel size, resampled and
normalised to the model scale by ``tasks.inference.resample`` (the same code the ensemble
runs), cropped to a square patch, with its columns' positions mapped to model pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.inference.resample import scaling_for, to_model_scale


@dataclass(frozen=True)
class Sample:
    """A normalised patch (S, S) at the model scale and its columns in model px."""

    image: np.ndarray  # (S, S) float32
    rowcol: np.ndarray  # (n, 2) float32, model px
    cls: np.ndarray  # (n,) int8
    conditions: dict[str, Any]


def render_sample(conditions: dict[str, Any], seed: int, patch: int, model_pixel_size: float) -> Sample:
    """The twin's frame under ``conditions``, as a ``patch``² model-scale sample."""
    p = float(conditions["pixel_size"])
    side = math.ceil(patch * model_pixel_size / p) + 2
    twin = DigitalTwin(seed=seed, schedule=DriftSchedule(base=conditions), shape=(side, side))
    frame = twin.acquire(1)
    scaling = scaling_for(frame.image.shape, p, model_pixel_size)
    x = to_model_scale(torch.from_numpy(frame.image)[None, None], scaling)[0, 0].numpy()
    rowcol = scaling.to_model(frame.truth.rowcol)
    inside = (rowcol >= -1.0).all(axis=1) & (rowcol < patch + 1.0).all(axis=1)
    return Sample(
        image=np.ascontiguousarray(x[:patch, :patch], np.float32),
        rowcol=rowcol[inside],
        cls=frame.truth.cls[inside],
        conditions=dict(frame.conditions),
    )
