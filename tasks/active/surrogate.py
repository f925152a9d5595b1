"""The surrogate the campaign consults: a GP (deep-kernel or plain) over a fixed candidate set."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import gpytorch
import numpy as np
import torch
from linear_operator.utils.warnings import NumericalWarning
from torch import nn

from scopeflow.errors import InputError

from .dkl_model import DKLModel
from .feature_extractor import PatchFeatureExtractor
from .scoring.candidate_model import CandidateModel

# One-sided 5 % point of the standard normal: the deep model decides only when it has predicted
# significantly better (``GPSurrogate.deep_pays``).
VUONG_Z = 1.645


class GPSurrogate:
    """Fits a ``DKLModel`` to the candidates measured so far and predicts at every candidate.

    ``inputs`` (n_candidates, d) are the candidates' standardised patches. Each ``fit`` warm
    -starts from the previous one (the feature extractor and kernel keep their weights), so
    only the first fit pays ``first_iters`` optimiser steps and later ones ``warm_iters``.
    Beyond ``exact_limit`` measured points a model with a feature extractor switches to
    a sparse GP (SGPR) on ``n_inducing`` inducing points, initialised on measured points' features. Targets are standardised internally;
    posteriors come back in the units of the values given to ``fit``.
    """

    def __init__(
        self,
        inputs: np.ndarray,
        feature_extractor: nn.Module | None = None,
        *,
        first_iters: int = 80,
        warm_iters: int = 30,
        lr: float = 0.03,
        weight_decay: float = 1e-3,
        exact_limit: int = 1000,
        n_inducing: int = 256,
        objective: str = "mll",
    ) -> None:
        # float64 throughout: in float32 a GP whose outputscale grows large loses its noise floor
        # to round-off and the Cholesky fails (seen on MoS2 scenes); the matrices here are small.
        self.inputs = torch.as_tensor(np.asarray(inputs), dtype=torch.float64)
        if self.inputs.ndim != 2:
            raise InputError(f"candidate inputs must be (n, d), got shape {tuple(self.inputs.shape)}")
        self.feature_extractor = None if feature_extractor is None else feature_extractor.double()
        self.first_iters = first_iters
        self.warm_iters = warm_iters
        self.lr = lr
        self.weight_decay = weight_decay
        self.exact_limit = exact_limit
        self.n_inducing = n_inducing
        if objective not in ("mll", "loo"):
            raise InputError(f"unknown training objective {objective!r}; known: mll, loo")
        self.objective = objective
        self.model: DKLModel | None = None
        self.likelihood: gpytorch.likelihoods.GaussianLikelihood | None = None
        self._y_mean = 0.0
        self._y_std = 1.0
        self._train_idx = torch.empty(0, dtype=torch.long)
        self._train_y = torch.empty(0, dtype=torch.float64)
        # A plain GP beside a deep one (``dkl(fallback=True)``): it decides unless the deep model
        # has predicted the measurements significantly better, as each arrived (``deep_pays``).
        self.distances = SquaredDistances(self.inputs)
        self.fallback: GPSurrogate | None = None
        self.log_score = {"deep": 0.0, "plain": 0.0}  # summed log predictive density, nats
        self._log_densities: dict[str, list[float]] = {"deep": [], "plain": []}  # per point, nats
        self.deciding = "deep" if feature_extractor is not None else "plain"
        self._candidate_models: dict[str, CandidateModel] = {}

    @classmethod
    def dkl(
        cls,
        inputs: np.ndarray,
        *,
        out_dim: int = 4,
        n_components: int = 32,
        whiten: bool = False,
        seed: int = 0,
        objective: str = "loo",
        fallback: bool = True,
        **kw: Any,
    ) -> GPSurrogate:
        """Deep kernel learning over patches: survey PCA → linear + MLP residual → ARD RBF GP
        (beside a plain kernel on the patches), trained by leave-one-out likelihood.

        With ``fallback`` a plain GP on the patches is fitted beside it at every step and
        decides until the deep model has a significantly higher prequential score (the log
        density each model gave every measurement before that measurement joined its data:
        Dawid 1984, the reward hypothesis learning uses; see ``deep_pays``). Why not the LOO likelihood the
        network is trained on: after training on it, it is an in-sample figure. On the
        benchmark's MoS₂ scene it rated the deep model far above the plain one (mean LOO
        log density 0.14 against −2.1 nats) while the deep model's predictions of the next
        measurement were off by 2.6 of its own σ on average (z variance 15): an over-confident
        posterior that let LogEI exploit a region it only believed was high.

        Why LOO: with tens of labels the marginal likelihood lets the network place the
        measured points apart in feature space (one lengthscale → 0.1 of the feature box,
        noise → its floor: seen on the benchmark's scenes), a model that explains its own data
        and predicts nothing; each point predicted from the others penalises exactly that
        (Bachoc 2013 on LOO against ML under misspecification; Ober et al. 2021 on DKL).
        """
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            fe = PatchFeatureExtractor(inputs, n_components=n_components, out_dim=out_dim, whiten=whiten)
        surrogate = cls(inputs, fe, objective=objective, **kw)
        if fallback:
            surrogate.fallback = cls.plain(inputs, **kw)
            surrogate.fallback.distances = surrogate.distances  # the same patches: one cache
            surrogate.deciding = "plain"
        return surrogate

    @classmethod
    def plain(cls, inputs: np.ndarray, **kw: Any) -> GPSurrogate:
        """A plain GP on the raw standardised patches (RBF, one lengthscale): the baseline."""
        return cls(inputs, None, **kw)

    @property
    def n_candidates(self) -> int:
        """How many candidates this surrogate predicts at."""
        return int(self.inputs.shape[0])

    @property
    def kind(self) -> str:
        """``dkl-exact``, ``dkl-sparse`` or ``gp-exact``: what the last fit used."""
        if self.feature_extractor is None:
            return "gp-exact"
        return "dkl-sparse" if self._scalable(len(self._train_idx)) else "dkl-exact"

    def _scalable(self, n: int) -> bool:
        return self.feature_extractor is not None and n > self.exact_limit

    def fit(self, indices: Sequence[int], values: np.ndarray, *, noise_sd: float | None = None) -> float:
        """Train on candidates ``indices`` measured at ``values``; returns the final loss (−MLL/n).

        ``noise_sd`` (the values' units), when known from counting statistics, fixes the
        likelihood's noise instead of learning it: with tens of points a deep kernel can
        otherwise shrink the noise to its floor and interpolate the shot noise.
        """
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        y = np.asarray(values, dtype=np.float64)
        if len(idx) != len(y) or len(idx) < 2:
            raise InputError(
                f"fit needs ≥ 2 measured candidates with one value each, got {len(idx)} and {len(y)}"
            )
        if not np.all(np.isfinite(y)):
            raise InputError("measured values must be finite")
        if self.fallback is not None:
            self._weigh_new(idx, y)
        self._y_mean = float(y.mean())
        self._y_std = float(y.std()) or 1.0
        ty = torch.as_tensor((y - self._y_mean) / self._y_std, dtype=torch.float64)
        x = self.inputs[idx]
        scalable = self._scalable(len(idx))
        rebuild = self.model is None or scalable != isinstance(
            self.model.covar_module, gpytorch.kernels.InducingPointKernel
        )
        iters = self.first_iters if self.model is None else self.warm_iters
        if rebuild:
            self.likelihood = gpytorch.likelihoods.GaussianLikelihood(
                noise_constraint=gpytorch.constraints.GreaterThan(1e-3)
            )
            inducing = None
            if scalable:
                assert self.feature_extractor is not None
                pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[: self.n_inducing]
                with torch.no_grad():
                    inducing = self.feature_extractor(x[pick])
            previous = self.model
            self.model = DKLModel(x, ty, self.likelihood, self.feature_extractor, inducing).double()
            self.likelihood.double()
            scale = self.model.covar_module
            if isinstance(scale, gpytorch.kernels.InducingPointKernel):
                scale = scale.base_kernel
            if previous is None:
                if isinstance(scale, gpytorch.kernels.AdditiveKernel):
                    deep, plain = scale.kernels
                    deep.base_kernel.initialize(lengthscale=0.5)
                    plain.base_kernel.initialize(lengthscale=float(np.sqrt(x.shape[1])))
                else:
                    lengthscale = 0.5 if self.feature_extractor is not None else float(np.sqrt(x.shape[1]))
                    scale.base_kernel.initialize(lengthscale=lengthscale)
            else:
                # Switching exact → sparse: keep the deep kernel's hyperparameters learned so far.
                old = previous.covar_module
                old = old.base_kernel if isinstance(old, gpytorch.kernels.InducingPointKernel) else old
                old = old.kernels[0] if isinstance(old, gpytorch.kernels.AdditiveKernel) else old
                scale.initialize(outputscale=old.outputscale.detach())
                scale.base_kernel.initialize(lengthscale=old.base_kernel.lengthscale.detach())
                self.model.mean_module.load_state_dict(previous.mean_module.state_dict())
            self.likelihood.initialize(noise=0.1)
        else:
            self.model.set_train_data(x, ty, strict=False)
        assert self.model is not None
        assert self.likelihood is not None
        if noise_sd is not None:
            floor = 2 * self.likelihood.noise_covar.raw_noise_constraint.lower_bound.item()
            self.likelihood.noise = max((noise_sd / self._y_std) ** 2, floor)
            self.likelihood.noise_covar.raw_noise.requires_grad_(False)
        self._train_idx, self._train_y = idx, ty
        loss = self._train(iters)
        if self.fallback is not None:
            self._candidate_models = {"deep": self._candidate_model()}
            if self._scalable(len(idx)):
                # Beyond ``exact_limit`` an exact plain GP costs O(n³) a step: the sparse deep one decides.
                self.deciding = "deep"
            else:
                self.fallback.fit(indices, values, noise_sd=noise_sd)
                self._candidate_models["plain"] = self.fallback.candidate_model()
                self.deciding = "deep" if self.deep_pays() else "plain"
        return loss

    def deep_pays(self) -> bool:
        """Whether the deep model has predicted the measurements so far significantly better
        than the plain one: Vuong's (1989) test for non-nested models on the per-point
        differences of log predictive density, one-sided at the conventional 5 % (z > 1.645).

        The summed difference alone is a noisy figure: on the benchmark's scenes the deep model
        led it over stretches of tens of steps in runs where it then collected fewer targets.
        Otherwise the plain model decides: the deep features must earn their place.
        """
        d = np.subtract(self._log_densities["deep"], self._log_densities["plain"])
        if len(d) < 2 or not d.std(ddof=1) > 0:
            return False
        return bool(d.mean() / (d.std(ddof=1) / np.sqrt(len(d))) > VUONG_Z)

    def _weigh_new(self, idx: torch.Tensor, y: np.ndarray) -> None:
        """Add to each model's score the log density its last posterior gave the new values."""
        if not self._candidate_models:
            return
        seen = set(self._train_idx.tolist())
        new = [j for j, i in enumerate(idx.tolist()) if i not in seen]
        if not new:
            return
        at = idx[new]
        for name, cm in self._candidate_models.items():
            mean = cm.mean[at].double() * cm.y_std + cm.y_mean
            noise = cm.likelihood.noise.detach().reshape(-1)[0].double()
            var = (cm.variance[at].double() + noise) * cm.y_std**2
            obs = torch.as_tensor(y[new], dtype=torch.float64)
            density = -0.5 * (torch.log(2 * torch.pi * var) + (obs - mean) ** 2 / var)
            self.log_score[name] += float(density.sum())
            self._log_densities[name].extend(density.tolist())

    def _train(self, iters: int) -> float:
        assert self.model is not None
        assert self.likelihood is not None
        model, likelihood = self.model, self.likelihood
        model.train()
        likelihood.train()
        fe_params = list(self.feature_extractor.parameters()) if self.feature_extractor is not None else []
        fe_ids = {id(p) for p in fe_params}
        gp_params = [p for p in model.parameters() if id(p) not in fe_ids]
        groups = [{"params": gp_params, "weight_decay": 0.0}]
        if fe_params:
            # Weight decay on the network only: it keeps features smooth when points are few.
            groups.append({"params": fe_params, "weight_decay": self.weight_decay})
        opt = torch.optim.AdamW(groups, lr=self.lr)
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
        exact = not isinstance(model.covar_module, gpytorch.kernels.InducingPointKernel)
        loo = self.objective == "loo" and exact
        d2 = self.distances.to(self._train_idx)[self._train_idx] if exact else None
        loss = torch.tensor(float("nan"))
        with _near_singular_ok():
            for _ in range(iters):
                opt.zero_grad()
                if d2 is None:
                    loss = -mll(model(*model.train_inputs), model.train_targets)
                else:
                    loss = -_log_likelihood(model, likelihood, d2, loo=loo)
                loss.backward()
                opt.step()
        model.eval()
        likelihood.eval()
        return float(loss.detach())

    def candidate_model(self) -> CandidateModel:
        """The fitted GP as a BoTorch model over every candidate's features (standardised units):
        the deep one, or its plain fallback while that has predicted better (``deciding``).

        The network runs once here, not once per candidate scored.
        """
        if self.model is None or self.likelihood is None:
            raise InputError("the surrogate has not been fitted yet: call fit() first")
        if self._candidate_models:
            return self._candidate_models[self.deciding]
        return self._candidate_model()

    def _candidate_model(self) -> CandidateModel:
        assert self.model is not None
        assert self.likelihood is not None
        model = self.model
        with torch.no_grad():
            z = model.features(self.inputs)
        cross = None
        if not isinstance(model.covar_module, gpytorch.kernels.InducingPointKernel):
            distances = self.distances

            def cross(idx: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    return _covariance(model, z, idx, distances.to(idx))

        return CandidateModel(
            z,
            self._train_idx,
            self._train_y,
            self.likelihood,
            model.mean_module,
            model.covar_module,
            y_mean=self._y_mean,
            y_std=self._y_std,
            cross_covariance=cross,
        )


class SquaredDistances:
    """Squared Euclidean distances (n, m) from every candidate's raw input to candidates
    ``idx``, one column per candidate, computed once and kept for the campaign.

    A plain kernel on 576-pixel patches otherwise recomputes them at every training step
    and for every candidate at every decision: most of a decision's time (measured: 0.25 s
    of a 0.3 s plain-GP fit under load, against milliseconds from the cache).
    """

    def __init__(self, inputs: torch.Tensor) -> None:
        self.inputs = inputs
        self.sq = (inputs**2).sum(-1)
        self.columns: dict[int, int] = {}
        self.block = torch.empty(len(inputs), 0, dtype=inputs.dtype)

    def to(self, idx: torch.Tensor) -> torch.Tensor:
        """Distances² (n_candidates, len(idx)) in the inputs' units²."""
        wanted = idx.tolist()
        new = [i for i in dict.fromkeys(wanted) if i not in self.columns]
        if new:
            g = self.inputs @ self.inputs[new].T
            d = (self.sq[:, None] + self.sq[new][None] - 2 * g).clamp_min(0)
            for j, i in enumerate(new):
                self.columns[i] = self.block.shape[1] + j
            self.block = torch.cat([self.block, d], dim=1)
        return self.block[:, [self.columns[i] for i in wanted]]


def _covariance(model: DKLModel, z: torch.Tensor, idx: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
    """The exact model's kernel between inputs ``z`` (r, ·) and candidates ``idx``, the raw
    part from squared distances ``d2`` (r, m): what ``covar_module(z, z[idx])`` computes."""
    kernel = model.covar_module
    if isinstance(kernel, gpytorch.kernels.AdditiveKernel):
        deep, plain = kernel.kernels
        dims = int(deep.base_kernel.active_dims.numel())
        with gpytorch.settings.lazily_evaluate_kernels(False):
            k_deep = deep(z[..., :dims], z[idx][..., :dims]).to_dense()
        return k_deep + _rbf(plain, d2)
    if model.feature_extractor is not None:  # a deep kernel alone: on the features, not the patches
        with gpytorch.settings.lazily_evaluate_kernels(False):
            return kernel(z, z[idx]).to_dense()
    return _rbf(kernel, d2)


def _rbf(kernel: gpytorch.kernels.ScaleKernel, d2: torch.Tensor) -> torch.Tensor:
    # gpytorch's RBFKernel: exp(−|x − x'|² / 2ℓ²), one lengthscale.
    return kernel.outputscale * torch.exp(-0.5 * d2 / kernel.base_kernel.lengthscale.reshape(()) ** 2)


def _log_likelihood(
    model: DKLModel, likelihood: gpytorch.likelihoods.GaussianLikelihood, d2: torch.Tensor, *, loo: bool
) -> torch.Tensor:
    """Per point, the marginal log likelihood of the training targets (what gpytorch's
    ``ExactMarginalLogLikelihood`` returns), or with ``loo`` the mean leave-one-out log
    predictive density in closed form (Rasmussen & Williams 2006, eq. 5.10-5.12: each point
    predicted from all the others). ``d2`` (n, n): the training inputs' squared distances."""
    (x,) = model.train_inputs
    y = model.train_targets
    z = model.features(x)
    idx = torch.arange(len(y))
    n = len(y)
    k = _covariance(model, z, idx, d2)
    k = k + (likelihood.noise.reshape(-1)[0] + 1e-8) * torch.eye(n, dtype=k.dtype)
    chol = torch.linalg.cholesky(k)
    r = (y - model.mean_module(z)).unsqueeze(-1)
    if not loo:
        a = torch.linalg.solve_triangular(chol, r, upper=False)
        return (-0.5 * (a**2).sum() - torch.log(torch.diagonal(chol)).sum()) / n - 0.5 * math.log(2 * math.pi)
    k_inv = torch.cholesky_inverse(chol)
    alpha = (k_inv @ r).squeeze(-1)
    d = torch.diagonal(k_inv)
    var = 1.0 / d
    mu_err = alpha / d
    return (-0.5 * torch.log(2 * torch.pi * var) - 0.5 * mu_err**2 / var).mean()


@contextmanager
def _near_singular_ok() -> Iterator[None]:
    """Silence gpytorch's NumericalWarning (jitter added, negative variances clamped).

    Thousands of candidates a few pixels apart make the predictive covariance numerically
    singular by construction; jitter and clamping are the standard, correct remedy there, so
    the warning carries no news. Other warnings pass through.
    """
    with warnings.catch_warnings(), _sparse_checks_off():
        warnings.simplefilter("ignore", NumericalWarning)
        yield


def _sparse_checks_off() -> torch.sparse.check_sparse_tensor_invariants:
    # KISS-GP's interpolation matrices are sparse tensors built by linear_operator from valid
    # indices; say so explicitly (torch warns when the choice is left implicit).
    return torch.sparse.check_sparse_tensor_invariants(enable=False)
