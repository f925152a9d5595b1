"""BoTorch's acquisition functions over the candidate set, against closed forms and known maps."""

from __future__ import annotations

import gpytorch
import numpy as np
import pytest
import torch
from scipy.stats import norm

from scopeflow.errors import InputError
from tasks.active import SCORERS, CandidateModel, GPSurrogate, make_scorer
from tasks.active.scoring.scorer import score_all

from .test_surrogate import blob_patches


def line_model(train: list[int], values: list[float], n: int = 200) -> CandidateModel:
    """An exact GP (RBF, lengthscale 0.1, noise 1e-4) on n candidates evenly spread on [0, 1]."""
    z = torch.linspace(0, 1, n, dtype=torch.float64).unsqueeze(-1)
    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    likelihood.noise = 1e-4
    kernel = gpytorch.kernels.RBFKernel().double()
    kernel.lengthscale = 0.1
    mean = gpytorch.means.ZeroMean().double()
    return CandidateModel(z, train, torch.tensor(values, dtype=torch.float64), likelihood, mean, kernel)


def test_posterior_matches_gpytorch_exact_prediction() -> None:
    cm = line_model([20, 100, 160], [0.5, -1.0, 2.0])
    gp = gpytorch.models.ExactGP(cm.z[cm.train_idx], cm.train_y, cm.likelihood)
    gp.mean_module, gp.covar_module = cm.mean_module, cm.covar_module
    gp.forward = lambda x: gpytorch.distributions.MultivariateNormal(gp.mean_module(x), gp.covar_module(x))
    gp.eval()
    with torch.no_grad():
        f = gp(cm.z)
    np.testing.assert_allclose(cm.mean, f.mean, atol=1e-6)
    np.testing.assert_allclose(cm.variance, f.variance.clamp_min(1e-8), atol=1e-6)
    joint = cm.posterior(cm.inputs[[10, 11, 150]].unsqueeze(0)).mvn.covariance_matrix[0]
    np.testing.assert_allclose(joint, f.covariance_matrix[[10, 11, 150]][:, [10, 11, 150]], atol=1e-6)


def test_logei_is_the_log_of_the_closed_form_ei() -> None:
    cm = line_model([20, 100, 160], [0.5, -1.0, 2.0])
    best = 1.0
    log_ei = score_all(make_scorer("logei")._analytic(cm, best), cm.inputs)
    sd = cm.variance.sqrt().numpy()
    z = (cm.mean.numpy() - best) / sd
    ei = sd * (z * norm.cdf(z) + norm.pdf(z))
    ok = ei > 1e-12
    np.testing.assert_allclose(np.exp(log_ei.numpy()[ok]), ei[ok], rtol=1e-4)


@pytest.mark.parametrize("name", SCORERS)
def test_every_scorer_picks_free_distinct_candidates(name: str) -> None:
    cm = line_model([20, 100, 160], [0.5, -1.0, 2.0])
    excluded = np.zeros(200, dtype=bool)
    excluded[[20, 100, 160, 161]] = True
    picks = make_scorer(name).choose(
        cm, 4, excluded=excluded, pending=[159], best=2.0, rng=np.random.default_rng(0)
    )
    assert len(set(picks)) == 4
    assert not set(picks) & {20, 100, 160, 161, 159}


def test_ucb_beta_moves_the_choice_and_maxvar_explores() -> None:
    # A high measured value at 0.5; the far ends of the line are unknown.
    cm = line_model([90, 100, 110], [1.0, 2.0, 1.0])
    free = np.zeros(200, dtype=bool)
    rng = np.random.default_rng(0)
    exploit = make_scorer("ucb", beta=0.0).choose(cm, 1, excluded=free, pending=[], best=2.0, rng=rng)[0]
    explore = make_scorer("ucb", beta=100.0).choose(cm, 1, excluded=free, pending=[], best=2.0, rng=rng)[0]
    assert 90 <= exploit <= 110
    assert explore < 40 or explore > 160
    far = make_scorer("maxvar").choose(cm, 1, excluded=free, pending=[], best=2.0, rng=rng)[0]
    assert far in (0, 199)


def test_believer_batches_spread_out_instead_of_piling_up() -> None:
    cm = line_model([100], [0.0])
    picks = make_scorer("maxvar").choose(
        cm, 3, excluded=np.zeros(200, dtype=bool), pending=[], best=0.0, rng=np.random.default_rng(0)
    )
    assert min(abs(a - b) for i, a in enumerate(picks) for b in picks[i + 1 :]) > 20


def test_thompson_follows_the_posterior() -> None:
    # Two measured bumps, 2.0 and 1.0: the draws' maxima land near the higher one far more often.
    cm = line_model([50, 150], [2.0, 1.0])
    rng = np.random.default_rng(1)
    picks = [
        make_scorer("thompson").choose(
            cm, 1, excluded=np.zeros(200, dtype=bool), pending=[], best=2.0, rng=rng
        )[0]
        for _ in range(40)
    ]
    near_high = sum(abs(p - 50) < 20 for p in picks)
    near_low = sum(abs(p - 150) < 20 for p in picks)
    assert near_high > near_low


def test_campaign_on_a_known_map_finds_the_top() -> None:
    from tasks.active import Campaign

    x, y = blob_patches(400)
    c = Campaign(
        GPSurrogate.dkl(x, seed=0, first_iters=40, warm_iters=10), make_scorer("qlogei"), n_initial=6
    )
    while len(c.measured) < 30:
        p = c.propose(3)
        c.record(p.indices, y[p.indices])
    assert max(c.values) >= np.quantile(y, 0.98)
    assert len(set(c.measured)) == 30


def test_unknown_scorer_and_bad_batch() -> None:
    with pytest.raises(InputError, match="logei, pi, ucb, maxvar, thompson, qlogei, qucb"):
        make_scorer("expected-joy")
    with pytest.raises(InputError, match="beta"):
        make_scorer("ucb", beta=-1.0)
    cm = line_model([0], [0.0], n=3)
    with pytest.raises(InputError, match="only 2"):
        make_scorer("logei").choose(
            cm, 3, excluded=np.array([True, False, False]), pending=[], best=0.0, rng=np.random.default_rng(0)
        )
