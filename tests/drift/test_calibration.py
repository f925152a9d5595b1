"""The calibration's own arithmetic: thresholds from sorted simulated statistics equal numpy's."""

from __future__ import annotations

import numpy as np

from tasks.drift.calibration import sorted_quantile


def test_sorted_quantile_is_numpys_quantile_to_the_bit() -> None:
    rng = np.random.default_rng(4)
    for n in (1, 2, 7, 1000, 192_001):
        x = np.abs(rng.standard_t(3, size=(n, 3)))
        ordered = np.sort(x, axis=0)
        for p in np.concatenate(
            [[0.0, 1e-7, 0.5, 1.0], rng.uniform(0, 1, 50), 10 ** rng.uniform(-7, -0.3, 50)]
        ):
            assert np.array_equal(sorted_quantile(ordered, 1.0 - p), np.quantile(x, 1.0 - p, axis=0))
