"""Structured GPs and hypothesis learning on fields whose law and parameters are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scopeflow.errors import InputError
from tasks.active import make_scorer
from tasks.active.hypotheses import load_hypotheses
from tasks.active.hypothesis_learning import HypothesisCampaign
from tasks.active.structured import StructuredSurrogate

STRAIN = "tasks.active.hypotheses.strain"


def grid(n: int = 20, half: float = 18.0) -> np.ndarray:
    """Positions (n², 2) Å on a square grid centred on 0."""
    u = np.linspace(-half, half, n)
    x, y = np.meshgrid(u, u)
    return np.stack([x.ravel(), y.ravel()], axis=1)


def inclusion(xy: np.ndarray) -> np.ndarray:
    return 15.0 - 0.8 * np.exp(-((xy[:, 0] - 4.0) ** 2 + (xy[:, 1] + 6.0) ** 2) / (2 * 5.0**2))


def test_a_linear_law_is_recovered_within_its_laplace_sd() -> None:
    xy = grid()
    rng = np.random.default_rng(0)
    truth = 15.0 + 0.02 * xy[:, 0] - 0.01 * xy[:, 1]
    idx = rng.choice(len(xy), 40, replace=False)
    y = truth[idx] + 0.05 * rng.standard_normal(40)
    gradient = load_hypotheses(STRAIN, nominal=15.0)[0]
    fit = StructuredSurrogate(xy, gradient).fit(idx, y, noise_sd=0.05)
    expected = {"e0": 15.0, "gx": 0.02, "gy": -0.01}
    for name, value in expected.items():
        assert abs(fit.params[name] - value) < 3 * fit.sd[name], (name, fit.params, fit.sd)
    # The sd of an intercept from 40 points of noise 0.05 is about 0.05 / sqrt(40) = 0.008.
    assert 0.004 < fit.sd["e0"] < 0.03


def test_hypothesis_learning_finds_the_law_that_made_the_data() -> None:
    xy = grid()
    truth = inclusion(xy)
    rng = np.random.default_rng(1)
    campaign = HypothesisCampaign(xy, load_hypotheses(STRAIN, nominal=15.0), make_scorer("maxvar"), seed=1)
    while len(campaign.measured) < 25:
        p = campaign.propose(1)
        campaign.record(p.indices, truth[p.indices] + 0.05 * rng.standard_normal(1), [0.05])
    assert sum(campaign.chosen_counts) == 25 - campaign.n_initial
    report = campaign.finish()
    assert report.best == "inclusion", report.weights
    assert max(report.weights) > 0.9
    fit = report.fits[report.names.index("inclusion")]
    for name, value in {"a": -0.8, "x0": 4.0, "y0": -6.0, "w": 5.0}.items():
        assert abs(fit.params[name] - value) < 3 * fit.sd[name], (name, fit.params, fit.sd)
    assert len(report.history) == 25 - campaign.n_initial
    assert set(report.describe()["history"][-1]["weights"]) == {"gradient", "inclusion", "wall"}


def test_epsilon_greedy_and_softmax_choose_as_told() -> None:
    xy = grid(6)
    hyps = load_hypotheses(STRAIN, nominal=15.0)
    greedy = HypothesisCampaign(xy, hyps, make_scorer("maxvar"), policy="egreedy", epsilon=0.0)
    greedy.rewards = [[-3.0], [-1.0], [-2.0]]
    assert {greedy.choose_hypothesis() for _ in range(20)} == {1}
    soft = HypothesisCampaign(xy, hyps, make_scorer("maxvar"), temperature=1e-3)
    soft.rewards = [[-3.0], [-2.0], [-1.0]]
    assert {soft.choose_hypothesis() for _ in range(20)} == {2}
    with pytest.raises(InputError, match="policy"):
        HypothesisCampaign(xy, hyps, make_scorer("maxvar"), policy="vote")  # type: ignore[arg-type]


def test_hypotheses_from_a_file_and_clear_errors(tmp_path: Path) -> None:
    good = tmp_path / "laws.py"
    good.write_text(
        "from tasks.active.structured import Hypothesis, Parameter\n"
        "flat = Hypothesis('flat', (Parameter('c', 0.0, 1.0),), lambda x, p: p['c'] + 0 * x[..., 0])\n"
        "slope = Hypothesis('slope', (Parameter('s', 0.0, 1.0),), lambda x, p: p['s'] * x[..., 0])\n"
        "HYPOTHESES = [flat, slope]\n"
    )
    assert [h.name for h in load_hypotheses(good, nominal=0.0)] == ["flat", "slope"]
    (tmp_path / "none.py").write_text("x = 1\n")
    with pytest.raises(InputError, match="neither HYPOTHESES"):
        load_hypotheses(tmp_path / "none.py", nominal=0.0)
    (tmp_path / "broken.py").write_text("def (\n")
    with pytest.raises(InputError, match="SyntaxError"):
        load_hypotheses(tmp_path / "broken.py", nominal=0.0)
    with pytest.raises(InputError, match="does not exist"):
        load_hypotheses(tmp_path / "absent.py", nominal=0.0)


def test_the_kernel_can_see_image_features_while_the_law_sees_position() -> None:
    xy = grid()
    rng = np.random.default_rng(2)
    features = rng.standard_normal((len(xy), 8))
    # A residual the features explain (as local structure in a survey patch would), on a linear law.
    truth = 15.0 + 0.02 * xy[:, 0] + 0.1 * np.tanh(features[:, 0])
    idx = rng.choice(len(xy), 60, replace=False)
    y = truth[idx] + 0.02 * rng.standard_normal(60)
    gradient = load_hypotheses(STRAIN, nominal=15.0)[0]
    s = StructuredSurrogate(xy, gradient, features=features)
    fit = s.fit(idx, y, noise_sd=0.02)
    assert abs(fit.params["gx"] - 0.02) < 3 * fit.sd["gx"]
    cm = s.candidate_model()
    assert cm.z.shape == (len(xy), 10)
    np.testing.assert_allclose(
        s.law_map(), fit.params["e0"] + fit.params["gx"] * xy[:, 0] + fit.params["gy"] * xy[:, 1]
    )
    with pytest.raises(InputError, match="features"):
        StructuredSurrogate(xy, gradient, features=features[:5])


def test_sds_hold_when_the_kernel_underestimates_the_residual() -> None:
    # The noise is 0.1 but the fit is told 0.01 and the kernel's prior expects a small residual:
    # the Laplace sds, which trust that, come out several times too small; the reported ones
    # (sandwich where larger) follow the scatter the data actually show.
    xy = grid()
    truth = 15.0 + 0.02 * xy[:, 0] - 0.01 * xy[:, 1]
    gradient = load_hypotheses(STRAIN, nominal=15.0)[0]
    errors, sds, laplace = [], [], []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(xy), 40, replace=False)
        y = truth[idx] + 0.1 * rng.standard_normal(40)
        fit = StructuredSurrogate(xy, gradient, residual_scale=0.005, seed=seed).fit(idx, y, noise_sd=0.01)
        errors.append(fit.params["gx"] - 0.02)
        sds.append(fit.sd["gx"])
        laplace.append(fit.extra["sd_laplace"]["gx"])
    errors, sds, laplace = map(np.asarray, (errors, sds, laplace))
    assert np.all(sds >= laplace)
    # Over 12 fits the errors' rms against the stated sd: ~1 when the sd is right.
    assert np.sqrt(np.mean((errors / laplace) ** 2)) > 2.5
    assert 0.5 < np.sqrt(np.mean((errors / sds) ** 2)) < 1.6


def test_the_laws_uncertainty_joins_the_posterior_variance_when_asked() -> None:
    xy = grid()
    truth = inclusion(xy)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(xy), 20, replace=False)
    y = truth[idx] + 0.05 * rng.standard_normal(20)
    law = load_hypotheses(STRAIN, nominal=15.0)[1]
    at_map = StructuredSurrogate(xy, law)
    at_map.fit(idx, y, noise_sd=0.05)
    integrated = StructuredSurrogate(xy, law, law_uncertainty=True)
    integrated.fit(idx, y, noise_sd=0.05)
    a, b = at_map.candidate_model(), integrated.candidate_model()
    # Integrating the parameters only adds variance, most where they are least decided...
    assert torch.all(b.variance >= a.variance - 1e-9)
    assert b.variance.max() > 10 * a.variance.max()
    # ...and the mean stays the law's fit (one Gauss-Newton step from it), as good a map.
    rmse = [float(np.sqrt(np.mean((cm.mean.numpy() - truth) ** 2))) for cm in (a, b)]
    assert rmse[1] < 1.2 * rmse[0] < 0.1, rmse
