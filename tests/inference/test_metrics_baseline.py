"""Matching, F1, and the classical baseline on a synthetic lattice."""

from __future__ import annotations

import numpy as np

from tasks.inference.baseline import ClassicalFinder
from tasks.inference.metrics import evaluate, match
from tests.inference.test_peaks import gaussian_spots


def test_matching_is_one_to_one_and_within_the_distance() -> None:
    truth = np.array([[10.0, 10.0], [20.0, 20.0]])
    found = np.array([[10.2, 10.0], [10.1, 10.0], [25.0, 25.0]])
    pairs, dist = match(found, truth, 1.0)
    assert pairs.tolist() == [[1, 0]]
    assert np.allclose(dist, [0.1])
    scores = evaluate([found], [truth], pixel_size=0.1, max_distance=0.1)
    assert (scores.true_positives, scores.false_positives, scores.false_negatives) == (1, 2, 1)
    assert scores.f1 == 0.4


def test_classical_finder_recovers_a_clean_lattice() -> None:
    rng = np.random.default_rng(2)
    grid = np.stack(np.meshgrid(np.arange(6, 120, 12.0), np.arange(6, 120, 12.0), indexing="ij"), -1).reshape(
        -1, 2
    )
    truth = grid + rng.uniform(-0.4, 0.4, grid.shape)
    image = 100 * gaussian_spots((128, 128), truth, 2.0) + rng.poisson(5.0, (128, 128))
    atoms = ClassicalFinder().locate(image, pixel_size=0.12, min_separation=12 * 0.12)
    scores = evaluate([atoms.rowcol], [truth], 0.12)
    assert scores.f1 == 1.0
    assert scores.median_error < 0.3
