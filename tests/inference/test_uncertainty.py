"""The shipped ensemble's spread: larger on out-of-distribution frames than on familiar ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from storage.models import ModelRegistry, load_ensemble
from tasks.acquisition.twin import DigitalTwin, DriftSchedule


@pytest.fixture(scope="module")
def ensemble():  # type: ignore[no-untyped-def]
    return load_ensemble("production", ModelRegistry("/nonexistent-registry"), device=torch.device("cpu"))


def frames(base: dict, n: int = 3) -> list[np.ndarray]:
    twins = (DigitalTwin(21, DriftSchedule(base={**base, "region": 50 + i}), (128, 128)) for i in range(n))
    return [t.acquire(0).image for t in twins]


def mean_uncertainty(ensemble, images: list[np.ndarray], pixel_size: float = 0.12) -> float:  # type: ignore[no-untyped-def]
    return float(np.concatenate([a.uncertainty for a in ensemble.locate(images, pixel_size)]).mean())


def test_members_disagree_more_out_of_distribution(ensemble) -> None:  # type: ignore[no-untyped-def]
    familiar = mean_uncertainty(ensemble, frames({}))
    rng = np.random.default_rng(0)
    unfamiliar = {
        # Far outside the training ranges: 250 Å defocus.
        "defocus": mean_uncertainty(ensemble, frames({"defocus": 250.0})),
        # Not a microscope image of a crystal at all: smooth random texture, pure shot noise.
        "texture": mean_uncertainty(
            ensemble, [gaussian_filter(rng.normal(size=(128, 128)), 3.0) for _ in range(3)]
        ),
        "noise": mean_uncertainty(
            ensemble, [rng.poisson(5.0, (128, 128)).astype(np.float32) for _ in range(3)]
        ),
        # A frame whose pixel size is given wrong by a factor of two: every spacing is off.
        "scale": mean_uncertainty(ensemble, frames({}), pixel_size=0.24),
    }
    assert familiar < 0.02
    for name, value in unfamiliar.items():
        assert value > 3 * familiar + 0.03, name
