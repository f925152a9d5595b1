"""Retraining's condition estimate on twin frames whose conditions are known.

The old estimate matched four summary statistics over a coarse grid of rendered conditions:
a tenfold dose drop read ×1.3 (the grid's nearest dose), and blur read as contamination.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.training.matching import estimate_conditions

BASE = {"lattice": "graphene", "pixel_size": 0.12, "region": 3}


def _frames(changes: dict[str, Any], n: int, start: int) -> list[np.ndarray]:
    twin = DigitalTwin(seed=31, schedule=DriftSchedule(base={**BASE, **changes}), shape=(128, 128))
    return [twin.acquire(start + i).image for i in range(n)]


@pytest.fixture(scope="module")
def reference() -> list[np.ndarray]:
    return _frames({}, 12, 0)


def test_a_dose_drop_is_measured_not_snapped_to_a_grid(reference: list[np.ndarray]) -> None:
    got, how = estimate_conditions(
        _frames({"dose": 5e5}, 12, 12), 0.12, "graphene", reference_frames=reference
    )
    assert got["dose"] == pytest.approx(5e5, rel=0.15)
    assert got["defocus"] == 0.0 and got["source_size"] == pytest.approx(0.3, abs=0.05)
    assert got["contamination"] == 0.0  # the reference's
    assert "Poisson" in how["dose"]


def test_a_defocus_is_fitted_from_the_spectrum_not_taken_for_contamination(
    reference: list[np.ndarray],
) -> None:
    got, how = estimate_conditions(
        _frames({"defocus": 80.0}, 12, 12), 0.12, "graphene", reference_frames=reference
    )
    assert abs(got["defocus"] - 80.0) <= 20.0, how
    assert got["contamination"] == 0.0  # blur is not taken for amorphous carbon
    assert got["dose"] == pytest.approx(5e6, rel=0.25)


def test_without_reference_frames_the_optics_stay_the_references() -> None:
    """A new sample region: spectra no longer compare, so defocus and source are the reference's."""
    got, how = estimate_conditions(
        _frames({"defocus": 80.0}, 6, 0), 0.12, "graphene", reference={"defocus": 10.0, "source_size": 0.4}
    )
    assert got["defocus"] == 10.0 and got["source_size"] == 0.4
    assert "defocus" not in how
