"""The shipped ensemble's spread: larger on out-of-distribution frames than on familiar ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from storage.models import ModelRegistry, load_ensemble
from tasks.acquisition.twin import DigitalTwin, DriftSchedule


@pytest.fixture(scope="module")
def ensemble():  # type: ignore[no-untyped-def]
    return load_ensemble("production", ModelRegistry("/nonexistent-registry"), device=torch.device("cpu"))


def frames(base: dict, n: int = 3) -> list[np.ndarray]:
    return [
        DigitalTwin(21, DriftSchedule(base={**base, "region": 50 + i}), (128, 128)).acquire(0).image
        for i in range(n)
    ]


def spread(ensemble, images: list[np.ndarray]) -> float:  # type: ignore[no-untyped-def]
    return float(np.mean([ensemble.maps(img, 0.12).variance.mean().item() for img in images]))


def test_variance_is_higher_out_of_distribution(ensemble) -> None:  # type: ignore[no-untyped-def]
    familiar = spread(ensemble, frames({}))
    # Far outside the training ranges: 400 Å defocus at a tenth of the lowest trained dose.
    blurred = spread(ensemble, frames({"defocus": 400.0, "dose": 1.5e4}))
    # Not a microscope image at all: smooth random texture.
    rng = np.random.default_rng(0)
    from scipy.ndimage import gaussian_filter

    texture = spread(ensemble, [gaussian_filter(rng.normal(size=(128, 128)), 3.0) for _ in range(3)])
    assert blurred > 2 * familiar
    assert texture > 2 * familiar
    # Per-atom uncertainty says the same where atoms are reported at all.
    ours = np.concatenate([a.uncertainty for a in ensemble.locate(frames({}), 0.12)])
    assert np.median(ours) < 0.1
