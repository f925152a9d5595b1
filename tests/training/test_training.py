"""Training data and training: deterministic given the seed, targets where the columns are."""

from __future__ import annotations

import multiprocessing
from typing import Any

import numpy as np
import torch

from tasks.training.augment import augment
from tasks.training.data import make_training_set
from tasks.training.targets import heatmaps, targets
from tasks.training.train import TrainConfig, train_ensemble


def test_heatmap_peaks_sit_on_the_columns() -> None:
    maps = heatmaps((16, 16), np.array([[4.0, 5.0], [10.5, 11.0]]), np.array([0, 2]), 3, sigma=1.0)
    assert maps.shape == (3, 16, 16)
    assert maps[0, 4, 5] == 1.0 and maps[2, 10, 11] > 0.88 and maps[1].max() == 0.0


def test_training_set_is_deterministic_and_augmentation_keeps_alignment() -> None:
    a = make_training_set(4, seed=3, patch=32)
    b = make_training_set(4, seed=3, patch=32)
    assert torch.equal(a.images, b.images)
    torch.testing.assert_close(a.targets, b.targets, equal_nan=True, rtol=0, atol=0)
    assert a.lineage["samples"] == 4 and sum(a.lineage["lattices"].values()) == 4
    assert not torch.equal(a.images, make_training_set(4, seed=4, patch=32).images)
    # Rendered by two processes, the same samples in the same order.
    c = make_training_set(4, seed=3, patch=32, workers=2)
    assert torch.equal(a.images, c.images)
    torch.testing.assert_close(a.targets, c.targets, equal_nan=True, rtol=0, atol=0)
    assert c.lineage == a.lineage
    atom = np.array([[3.3, 7.8]], np.float32)
    target = torch.from_numpy(targets((32, 32), atom, np.array([0]), 3, 1.0))[None].repeat(8, 1, 1, 1)
    image = target[:, :1].clone()
    x, y = augment(image, target, torch.Generator().manual_seed(0))
    for k in range(8):
        # Symmetries move image and target together: the brightest pixel stays on the column...
        assert torch.equal((x[k, 0] == x[k, 0].max()).nonzero(), (y[k, 0] == y[k, 0].max()).nonzero())
        # ...and every offset vector, turned with the map, still points at the same column.
        known = torch.isfinite(y[k, 3])
        pixels = known.nonzero().float()
        points = pixels + torch.stack([y[k, 3][known], y[k, 4][known]], dim=1)
        assert len(points) >= 4 and (points - points[0]).abs().max() < 1e-3


def test_tiny_training_is_reproducible() -> None:
    config = TrainConfig(
        seed=1,
        members=2,
        widths=(4, 8, 8),
        samples=8,
        patch=32,
        batch=4,
        baseline_steps=3,
        member_steps=2,
        calibration_frames=1,
    )
    device = torch.device("cpu")
    first = train_ensemble(config, log=lambda _: None, device=device)
    second = train_ensemble(config, log=lambda _: None, device=device)
    assert first.ensemble.members == 2
    for name, value in first.ensemble.tensors().items():
        assert torch.equal(value, second.ensemble.tensors()[name]), name
    assert first.lineage["training_data"]["samples"] == 8
    assert 0.0 <= first.metrics["validation_f1"] <= 1.0


def test_retraining_budget_follows_the_device_unless_set() -> None:
    from scopeflow.settings import RETRAIN_STEPS_CPU, RETRAIN_STEPS_CUDA, EdgeSettings
    from tasks.training.finetune import MIN_TWIN_SAMPLES, lr_for, twin_samples_for

    assert EdgeSettings().retrain_steps_for("cpu") == RETRAIN_STEPS_CPU
    assert EdgeSettings().retrain_steps_for("cuda") == RETRAIN_STEPS_CUDA > RETRAIN_STEPS_CPU
    assert EdgeSettings(retrain_steps=7).retrain_steps_for("cuda") == 7
    # The edge's short run keeps its samples; a long one sees each sample a few times, not ~75.
    assert twin_samples_for(RETRAIN_STEPS_CPU) == MIN_TWIN_SAMPLES
    assert twin_samples_for(RETRAIN_STEPS_CUDA) == RETRAIN_STEPS_CUDA
    # The edge's few steps take bigger ones; the long run keeps the step size it was measured at.
    assert lr_for(RETRAIN_STEPS_CPU) > lr_for(RETRAIN_STEPS_CUDA)


def _render_in_daemon(queue: Any) -> None:
    queue.put(make_training_set(4, seed=3, patch=32, workers=2).images.numpy())


def test_training_set_renders_in_a_daemonic_process() -> None:
    """A Dask worker is daemonic and may not start processes: rendering falls back to one."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_render_in_daemon, args=(queue,), daemon=True)
    child.start()
    images = queue.get(timeout=120)
    child.join(30)
    assert child.exitcode == 0
    np.testing.assert_array_equal(images, make_training_set(4, seed=3, patch=32).images.numpy())
