"""The shipped ensemble's spread: larger on out-of-distribution frames than on familiar ones."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from tasks.acquisition.twin import DigitalTwin, DriftSchedule


def frames(base: dict, n: int = 3) -> list[np.ndarray]:
    twins = (DigitalTwin(21, DriftSchedule(base={**base, "region": 50 + i}), (128, 128)) for i in range(n))
    return [t.acquire(0).image for t in twins]


def mean_uncertainty(ensemble, images: list[np.ndarray], pixel_size: float = 0.12) -> float:  # type: ignore[no-untyped-def]
    """Mean uncertainty of the columns reported; 0.5 (an even split) where none are: a frame
    that confirms no column is the strongest doubt there is."""
    found = np.concatenate([a.uncertainty for a in ensemble.locate(images, pixel_size)])
    return float(found.mean()) if len(found) else 0.5


def test_members_disagree_more_out_of_distribution(ensemble) -> None:  # type: ignore[no-untyped-def]
    familiar = mean_uncertainty(ensemble, frames({}))
    unfamiliar = {
        # Far outside the training ranges: 250 Å defocus.
        "defocus": mean_uncertainty(ensemble, frames({"defocus": 250.0})),
        # A frame whose pixel size is given wrong by a factor of two: every spacing is off.
        "scale": mean_uncertainty(ensemble, frames({}), pixel_size=0.24),
    }
    assert familiar < 0.02
    for name, value in unfamiliar.items():
        assert value > 3 * familiar + 0.03, name


def test_frames_without_a_crystal_give_no_columns(ensemble) -> None:  # type: ignore[no-untyped-def]
    # Not a microscope image of a crystal at all: smooth random texture, pure shot noise,
    # vacuum. The members complete lattices they were trained on (over 100 columns in noise
    # before the frame was checked); now the frame says there is no lattice to find.
    rng = np.random.default_rng(0)
    images = [
        gaussian_filter(rng.normal(size=(128, 128)), 3.0) * 50 + 300,
        rng.poisson(5.0, (128, 128)).astype(np.float32),
        rng.poisson(60.0, (256, 256)).astype(np.float32),
        rng.poisson(0.5, (256, 256)).astype(np.float32),
    ]
    for image in images:
        atoms = ensemble.locate(image, 0.12)[0]
        assert len(atoms) == 0
        assert not atoms.crystal and not atoms.trusted
