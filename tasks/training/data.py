"""A training set of twin samples, deterministic in its seed, held in memory as tensors."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import current_process, get_context
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


def _render(
    seed: int,
    i: int,
    ranges: ConditionRanges,
    patch: int,
    model_pixel_size: float,
    sigma: float,
    n_classes: int,
) -> tuple[np.ndarray, np.ndarray, str, int]:
    """Sample ``i`` of seed ``seed``: its image, its targets, its lattice and its column count."""
    rng = np.random.default_rng([seed, i, 0x7A1])
    conditions = sample_conditions(rng, ranges)
    sample = render_sample(conditions, int(rng.integers(2**31 - 1)), patch, model_pixel_size)
    target = make_targets((patch, patch), sample.rowcol, sample.cls, n_classes, sigma)
    return sample.image, target, str(conditions["lattice"]), len(sample.rowcol)


def _render_many(seed: int, indices: range, *args: Any) -> list[tuple[np.ndarray, np.ndarray, str, int]]:
    return [_render(seed, i, *args) for i in indices]


# Samples per rendering process: a spawned process spends ~2-3 s importing torch and the twin,
# the time of ~60 samples (40 ms each on one core), so below a few hundred samples one
# process is as fast.
SAMPLES_PER_WORKER = 500


def make_training_set(
    n: int,
    seed: int,
    *,
    patch: int = 96,
    model_pixel_size: float = 0.2,
    sigma: float = 1.2,
    n_classes: int = 3,
    ranges: ConditionRanges = ConditionRanges(),
    workers: int | None = None,
) -> TrainingSet:
    """``n`` samples; sample ``i`` depends only on (``seed``, ``i``) and the ranges, not on
    ``workers``: the processes that render them (default one per ``SAMPLES_PER_WORKER``
    samples, at most the machine's cores)."""
    if workers is None:
        workers = min(os.cpu_count() or 1, n // SAMPLES_PER_WORKER)
    if current_process().daemon:
        # A daemonic process may not start children (a Dask worker, a pool's worker): render
        # here rather than fail the retraining.
        workers = 1
    workers = max(1, min(workers, n))
    args = (ranges, patch, model_pixel_size, sigma, n_classes)
    chunks = [range(k * n // workers, (k + 1) * n // workers) for k in range(workers)]
    if workers == 1:
        parts = [_render_many(seed, chunks[0], *args)]
    else:
        # spawn, not fork: the caller may hold CUDA or torch's thread pools, which a fork breaks.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            parts = list(pool.map(_render_many, [seed] * workers, chunks, *([a] * workers for a in args)))
    images = torch.empty((n, 1, patch, patch), dtype=torch.float32)
    targets = torch.empty((n, n_classes + 2, patch, patch), dtype=torch.float16)
    lattices: Counter[str] = Counter()
    columns = 0
    for i, (image, target, lattice, count) in enumerate(r for part in parts for r in part):
        images[i, 0] = torch.from_numpy(image)
        targets[i] = torch.from_numpy(target)
        lattices[lattice] += 1
        columns += count
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
