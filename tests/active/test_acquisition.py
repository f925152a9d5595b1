"""Acquisition functions against posteriors whose answers are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from scopeflow.errors import InputError
from tasks.active import (
    ExpectedImprovement,
    MaxVariance,
    Posterior,
    ThompsonSampling,
    UpperConfidenceBound,
    make_acquisition,
)

RNG = np.random.default_rng(0)


def test_ei_closed_form_values() -> None:
    # At mean == best, EI = sigma * phi(0) = sigma / sqrt(2 pi); with no uncertainty, max(gain, 0).
    post = Posterior(mean=np.array([0.0, 0.0, 2.0, -1.0]), variance=np.array([1.0, 4.0, 0.0, 0.0]))
    ei = ExpectedImprovement()(post, best=0.0, rng=RNG)
    np.testing.assert_allclose(ei, [1 / np.sqrt(2 * np.pi), 2 / np.sqrt(2 * np.pi), 2.0, 0.0], rtol=1e-12)


def test_ei_matches_monte_carlo() -> None:
    post = Posterior(mean=np.array([0.3]), variance=np.array([0.49]))
    draws = 0.3 + 0.7 * np.random.default_rng(1).standard_normal(400_000)
    mc = np.maximum(draws - 0.5, 0).mean()
    assert ExpectedImprovement()(post, best=0.5, rng=RNG)[0] == pytest.approx(mc, rel=0.01)


def test_ei_prefers_uncertainty_at_equal_mean_and_mean_at_equal_uncertainty() -> None:
    post = Posterior(mean=np.array([1.0, 1.0, 1.5]), variance=np.array([0.1, 1.0, 0.1]))
    ei = ExpectedImprovement()(post, best=1.2, rng=RNG)
    assert ei[1] > ei[0]
    assert ei[2] > ei[0]


def test_ucb_is_mean_plus_sqrt_beta_std_and_beta_moves_the_choice() -> None:
    post = Posterior(mean=np.array([1.0, 0.0]), variance=np.array([0.0, 1.0]))
    np.testing.assert_allclose(UpperConfidenceBound(beta=4.0)(post, 0.0, RNG), [1.0, 2.0])
    assert np.argmax(UpperConfidenceBound(beta=0.0)(post, 0.0, RNG)) == 0
    assert np.argmax(UpperConfidenceBound(beta=4.0)(post, 0.0, RNG)) == 1
    with pytest.raises(InputError):
        UpperConfidenceBound(beta=-1.0)


def test_max_variance_picks_most_uncertain() -> None:
    post = Posterior(mean=np.array([9.0, 0.0, 0.0]), variance=np.array([0.1, 3.0, 2.0]))
    assert np.argmax(MaxVariance()(post, 0.0, RNG)) == 1


def test_thompson_picks_each_candidate_as_often_as_it_is_the_maximum() -> None:
    # Two independent candidates N(0, 1) and N(1, 1): P(second is larger) = Phi(1/sqrt 2) = 0.760.
    post = Posterior(mean=np.array([0.0, 1.0]), variance=np.array([1.0, 1.0]))
    rng = np.random.default_rng(2)
    wins = np.mean([np.argmax(ThompsonSampling()(post, 0.0, rng)) == 1 for _ in range(4000)])
    assert wins == pytest.approx(0.760, abs=0.025)


def test_thompson_with_no_uncertainty_is_the_mean() -> None:
    post = Posterior(mean=np.array([0.0, 3.0, 1.0]), variance=np.zeros(3))
    np.testing.assert_array_equal(ThompsonSampling()(post, 0.0, RNG), [0.0, 3.0, 1.0])


def test_make_acquisition_names_the_known_ones() -> None:
    assert make_acquisition("ucb", beta=9.0).beta == 9.0
    with pytest.raises(InputError, match="ei, ucb, maxvar, thompson"):
        make_acquisition("pi")
