"""A fitted GP as BoTorch sees it: a ``Model`` over the candidate set, addressed by index.

BoTorch's acquisition functions ask a model for posteriors at points. Here the points are a
fixed discrete set (the candidate probe positions), so the model is addressed by candidate
index (a (…, q, 1) tensor of indices) and the exact-GP algebra is done once per fit for all
candidates: the posterior mean and variance of every candidate, and the whitened cross-
covariance ``W`` (n, N) from which the joint covariance of any q candidates is
``K_qq − W_q W_qᵀ``. gpytorch's own batched prediction recomputes the (N + q)² training
covariance for every candidate scored, which took 2–4 s for 3025 candidates of 576-pixel
patches (measured here); this takes milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gpytorch
import torch
from botorch.models.gpytorch import GPyTorchModel
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from botorch.sampling.pathwise import draw_matheron_paths

# Added to covariance diagonals (standardised units²) so Cholesky factors exist for
# candidates a fraction of a lengthscale apart; far below any measurement noise here.
JITTER = 1e-8
# Candidates a Thompson draw is taken jointly over when pathwise sampling is not available:
# a 500² Cholesky takes milliseconds, a 3025² one about a second.
SHORTLIST = 500


class FeatureGP(gpytorch.models.ExactGP, GPyTorchModel):
    """An exact GP on precomputed inputs sharing the trained mean, kernel and likelihood.

    Used for BoTorch's pathwise Thompson sampling, which needs a gpytorch model it knows.
    """

    _num_outputs = 1

    def __init__(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        likelihood: gpytorch.likelihoods.GaussianLikelihood,
        mean_module: gpytorch.means.Mean,
        covar_module: gpytorch.kernels.Kernel,
    ) -> None:
        super().__init__(train_x, train_y, likelihood)
        self.mean_module = mean_module
        self.covar_module = covar_module
        self.eval()

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class CandidateModel(Model):
    """Exact GP posterior over ``n`` candidates with inputs ``z`` (n, d), conditioned on
    ``train_y`` (model units) at candidates ``train_idx``.

    A property value ``v`` is ``(v − y_mean) / y_std`` in model units. ``inputs`` is the
    (n, 1) tensor of candidate indices that BoTorch's functions are evaluated at.
    """

    _num_outputs = 1

    def __init__(
        self,
        z: torch.Tensor,
        train_idx: Sequence[int] | torch.Tensor,
        train_y: torch.Tensor,
        likelihood: gpytorch.likelihoods.GaussianLikelihood,
        mean_module: gpytorch.means.Mean,
        covar_module: gpytorch.kernels.Kernel,
        *,
        y_mean: float = 0.0,
        y_std: float = 1.0,
        cross_covariance: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        # ``cross_covariance(idx)``: the kernel (n, m) between every candidate and candidates
        # ``idx``, for a surrogate that computes it faster than ``covar_module`` can (cached
        # distances); the same matrix either way.
        self.cross_covariance = cross_covariance
        self.z = z.detach()
        self.train_idx = torch.as_tensor(train_idx, dtype=torch.long)
        self.train_y = train_y.detach().to(self.z)
        self.likelihood = likelihood
        self.mean_module = mean_module
        self.covar_module = covar_module
        self.y_mean, self.y_std = float(y_mean), float(y_std)
        self.inputs = torch.arange(len(self.z), dtype=self.z.dtype).unsqueeze(-1)
        with torch.no_grad(), gpytorch.settings.lazily_evaluate_kernels(False):
            zt = self.z[self.train_idx]
            noise = likelihood.noise.detach().to(self.z).reshape(-1)[0]
            if cross_covariance is None:
                k_cross = covar_module(self.z, zt).to_dense()  # (n, N)
                k_train = covar_module(zt).to_dense()
            else:
                k_cross = cross_covariance(self.train_idx)
                k_train = k_cross[self.train_idx]
            k_train = k_train + (noise + JITTER) * torch.eye(len(zt), dtype=self.z.dtype)
            chol = torch.linalg.cholesky(k_train)
            prior_mean = mean_module(self.z).reshape(-1)
            alpha = torch.cholesky_solve((self.train_y - prior_mean[self.train_idx]).unsqueeze(-1), chol)
            self.mean = prior_mean + (k_cross @ alpha).squeeze(-1)
            self.w = torch.linalg.solve_triangular(chol, k_cross.T, upper=False).T  # (n, N)
            prior_var = covar_module(self.z, diag=True).reshape(-1)
            self.variance = (prior_var - (self.w**2).sum(-1)).clamp_min(JITTER)

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def batch_shape(self) -> torch.Size:
        return torch.Size([])

    def posterior(
        self,
        X: torch.Tensor,
        output_indices: list[int] | None = None,
        observation_noise: bool | torch.Tensor = False,
        posterior_transform: Any = None,
        **kwargs: Any,
    ) -> GPyTorchPosterior:
        """Joint posterior of the candidates whose indices ``X`` (…, q, 1) holds."""
        idx = X[..., 0].round().long()
        mean = self.mean[idx]
        if idx.shape[-1] == 1:
            cov = self.variance[idx].unsqueeze(-1)
        else:
            with torch.no_grad(), gpytorch.settings.lazily_evaluate_kernels(False):
                k_qq = self.covar_module(self.z[idx]).to_dense()
            wq = self.w[idx]
            cov = k_qq - wq @ wq.transpose(-1, -2)
            cov = cov + JITTER * torch.eye(idx.shape[-1], dtype=cov.dtype)
        if observation_noise is True:
            noise = self.likelihood.noise.detach().reshape(-1)[0]
            cov = cov + noise * torch.eye(idx.shape[-1], dtype=cov.dtype)
        post = GPyTorchPosterior(gpytorch.distributions.MultivariateNormal(mean, cov))
        return posterior_transform(post) if posterior_transform is not None else post

    def to_model_units(self, value: float) -> float:
        """A property value (its own units) in the model's standardised units."""
        return (value - self.y_mean) / self.y_std

    def conditioned(self, indices: Sequence[int], values: torch.Tensor) -> CandidateModel:
        """The same hyperparameters, with fantasy observations ``values`` (model units) at
        candidates ``indices`` added to the data (no retraining)."""
        if len(indices) == 0:
            return self
        idx = torch.cat([self.train_idx, torch.as_tensor(list(indices), dtype=torch.long)])
        y = torch.cat([self.train_y, values.reshape(-1).to(self.train_y)])
        return CandidateModel(
            self.z,
            idx,
            y,
            self.likelihood,
            self.mean_module,
            self.covar_module,
            y_mean=self.y_mean,
            y_std=self.y_std,
            cross_covariance=self.cross_covariance,
        )

    def sample_paths(self, k: int, seed: int, *, shortlist: int = SHORTLIST) -> torch.Tensor:
        """``k`` joint posterior draws (k, n) over all candidates, model units.

        BoTorch's pathwise sampling (Matheron's rule on random Fourier features of the
        kernel): exact in the limit of many features, and it never factors an n × n matrix.
        For kernels it has no features for (a sum of kernels), the draws are joint over the
        ``shortlist`` candidates with the highest mean + 3 sd (where a draw's maximum lies
        unless a 3-sigma event happens) and −inf elsewhere.
        """
        gp = FeatureGP(
            self.z[self.train_idx], self.train_y, self.likelihood, self.mean_module, self.covar_module
        )
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(seed)
            try:
                paths = draw_matheron_paths(gp, sample_shape=torch.Size([k]))
                return paths(self.z).reshape(k, -1)
            except NotImplementedError:
                top = torch.topk(self.mean + 3 * self.variance.sqrt(), min(shortlist, len(self.z))).indices
                draws = self.posterior(self.inputs[top].unsqueeze(0)).rsample(torch.Size([k]))
                out = torch.full((k, len(self.z)), -torch.inf, dtype=self.z.dtype)
                out[:, top] = draws.reshape(k, -1)
                return out
