"""A training set of twin samples, deterministic in its seed, held in memory as tensors."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .conditions import ConditionRanges, sample_conditions
from .synthesis import render_sample
from .targets import targets as make_targets


@dataclass
class TrainingSet:
    """``images`` (N, 1, S, S) float32 normalised; ``targets`` (N, C + 2, S, S) float16: class
    heatmaps, then row and column offsets to the nearest column (NaN where none is near)."""

    images: torch.Tensor
    targets: torch.Tensor
    lineage: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def concatenate(parts: Mapping[str, TrainingSet]) -> tuple[TrainingSet, dict[str, torch.Tensor]]:
    """One training set of named ``parts`` in order, and the sample indices of each part
    (members train on pools of them); the lineage keeps each part's under ``sources``."""
    index, start = {}, 0
    for name, part in parts.items():
        index[name] = torch.arange(start, start + len(part))
        start += len(part)
    data = TrainingSet(
        torch.cat([p.images for p in parts.values()]),
        torch.cat([p.targets for p in parts.values()]),
        {"sources": {name: p.lineage for name, p in parts.items()}},
    )
    return data, index


def make_training_set(
    n: int,
    seed: int,
    *,
    patch: int = 96,
    model_pixel_size: float = 0.2,
    sigma: float = 1.2,
    n_classes: int = 3,
    ranges: ConditionRanges = ConditionRanges(),
) -> TrainingSet:
    """``n`` samples; sample ``i`` depends only on (``seed``, ``i``) and the ranges."""
    images = torch.empty((n, 1, patch, patch), dtype=torch.float32)
    targets = torch.empty((n, n_classes + 2, patch, patch), dtype=torch.float16)
    lattices: Counter[str] = Counter()
    columns = 0
    for i in range(n):
        rng = np.random.default_rng([seed, i, 0x7A1])
        conditions = sample_conditions(rng, ranges)
        sample = render_sample(conditions, int(rng.integers(2**31 - 1)), patch, model_pixel_size)
        images[i, 0] = torch.from_numpy(sample.image)
        targets[i] = torch.from_numpy(
            make_targets((patch, patch), sample.rowcol, sample.cls, n_classes, sigma)
        )
        lattices[conditions["lattice"]] += 1
        columns += len(sample.rowcol)
    lineage = {
        "source": "digital twin (tasks.acquisition.twin)",
        "samples": n,
        "seed": seed,
        "patch_px": patch,
        "model_pixel_size_A": model_pixel_size,
        "target_sigma_px": sigma,
        "columns": columns,
        "lattices": dict(lattices),
        "condition_ranges": ranges.as_dict(),
    }
    return TrainingSet(images, targets, lineage)
