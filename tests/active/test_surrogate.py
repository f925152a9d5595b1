"""DKL learns a simple known map from patches, exactly and through KISS-GP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from scopeflow.errors import InputError
from tasks.active import CandidateModel, GPSurrogate, standardise


def blob_patches(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Patches 12×12 with a central blob of amplitude a on a random background; the map is a²."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-6:6, -6:6] + 0.5
    blob = np.exp(-(yy**2 + xx**2) / 4.0)
    a = rng.uniform(0.0, 1.0, n)
    shift = rng.uniform(0, 2 * np.pi, (n, 2))
    background = 0.3 * np.cos(xx[None] + shift[:, :1, None]) * np.cos(yy[None] + shift[:, 1:, None])
    patches = a[:, None, None] * blob[None] + background + 0.05 * rng.standard_normal((n, 12, 12))
    return standardise(patches), a**2


@pytest.mark.parametrize("exact_limit", [1000, 40], ids=["exact", "sparse"])
def test_dkl_learns_blob_amplitude(exact_limit: int) -> None:
    x, y = blob_patches(300)
    rng = np.random.default_rng(1)
    train = rng.choice(len(x), 60, replace=False)
    s = GPSurrogate.dkl(x, seed=0, exact_limit=exact_limit, n_inducing=32, first_iters=100)
    s.fit(train, y[train] + 0.02 * rng.standard_normal(60))
    assert s.kind == ("dkl-sparse" if exact_limit < 60 else "dkl-exact")
    cm = s.candidate_model()
    mean = cm.mean.numpy() * cm.y_std + cm.y_mean
    std = cm.variance.sqrt().numpy() * cm.y_std
    test = np.setdiff1d(np.arange(len(x)), train)
    rmse = float(np.sqrt(np.mean((mean[test] - y[test]) ** 2)))
    assert rmse < 0.1, rmse  # y spans [0, 1] with sd 0.3
    assert spearmanr(mean[test], y[test])[0] > 0.95
    # The posterior is least certain far from the data: a measured point is better known than average.
    assert std[train].mean() < std[test].mean()


def test_warm_refit_and_fantasies_shrink_variance() -> None:
    x, y = blob_patches(200)
    s = GPSurrogate.dkl(x, seed=0, first_iters=50, warm_iters=10)
    s.fit(np.arange(20), y[:20])
    s.fit(np.arange(30), y[:30])  # warm start: fewer iterations, same model
    before = s.candidate_model()
    far = int(np.argmax(before.variance))
    after = before.conditioned([far], before.mean[[far]])
    assert after.variance[far] < 0.5 * before.variance[far]
    np.testing.assert_allclose(
        s.candidate_model().variance, before.variance, rtol=1e-5
    )  # fantasies do not stick
    draws = before.sample_paths(2, seed=0)
    assert draws.shape == (2, 200)
    assert torch.isfinite(draws).sum() >= 2 * min(200, 500)


def test_plain_gp_and_errors() -> None:
    x, y = blob_patches(100)
    s = GPSurrogate.plain(x, first_iters=20)
    with pytest.raises(InputError, match="fit"):
        s.candidate_model()
    with pytest.raises(InputError, match="≥ 2"):
        s.fit([0], [1.0])
    s.fit(np.arange(30), y[:30])
    assert s.kind == "gp-exact"
    assert s.candidate_model().mean.shape == (100,)


def test_switching_from_exact_to_sparse_keeps_the_deep_kernel() -> None:
    x, y = blob_patches(200)
    s = GPSurrogate.dkl(x, seed=0, exact_limit=40, n_inducing=16, first_iters=30, warm_iters=10)
    s.fit(np.arange(30), y[:30])
    assert s.kind == "dkl-exact"
    assert s.model is not None
    learned = s.model.covar_module.kernels[0].base_kernel.lengthscale.detach().clone()
    s.fit(np.arange(50), y[:50])
    assert s.kind == "dkl-sparse"
    assert s.model is not None
    after = s.model.covar_module.base_kernel.base_kernel.lengthscale.detach()
    assert torch.allclose(after, learned, rtol=0.5)  # started from the exact fit, then a few steps
    assert s.candidate_model().mean.shape == (200,)


@pytest.mark.parametrize("model", ["plain", "dkl"])
def test_cached_distances_give_gpytorchs_posterior(model: str) -> None:
    x, y = blob_patches(150)
    s = GPSurrogate.plain(x, first_iters=20) if model == "plain" else GPSurrogate.dkl(x, fallback=False)
    s.fit(np.arange(25), y[:25], noise_sd=0.02)
    fast = s.candidate_model()
    assert fast.cross_covariance is not None
    assert s.model is not None
    with torch.no_grad():
        z = s.model.features(s.inputs)
    slow = CandidateModel(
        z, fast.train_idx, fast.train_y, fast.likelihood, fast.mean_module, fast.covar_module
    )
    torch.testing.assert_close(fast.mean, slow.mean, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(fast.variance, slow.variance, rtol=1e-5, atol=1e-8)


def test_a_plain_gp_decides_until_the_deep_features_predict_better() -> None:
    x, y = blob_patches(200)
    # Patches that say nothing about the values (a random map): the deep model cannot earn its place.
    noise = np.random.default_rng(3).standard_normal(200)
    s = GPSurrogate.dkl(x, seed=0, first_iters=30, warm_iters=10)
    assert s.fallback is not None
    for n in range(10, 40, 3):
        s.fit(np.arange(n), noise[:n], noise_sd=0.1)
    assert all(v < 0 for v in s.log_score.values())  # every new point was scored by both models
    assert s.deciding == "plain", s.log_score
    assert s.candidate_model() is s._candidate_models["plain"]
    # Patches that carry the map (the blob's amplitude): the deep model predicts better and decides.
    s = GPSurrogate.dkl(x, seed=0, first_iters=30, warm_iters=10)
    for n in range(10, 60, 3):
        s.fit(np.arange(n), y[:n], noise_sd=0.05)
    assert s.deciding == "deep", s.log_score
    without = GPSurrogate.dkl(x, seed=0, fallback=False)
    without.fit(np.arange(10), y[:10])
    assert without.deciding == "deep"
