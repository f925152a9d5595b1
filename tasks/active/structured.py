"""Structured Gaussian processes: a physical law as the GP's mean, with priors on its parameters.

A ``Hypothesis`` is a candidate law ``f(x; θ)`` for the measured property at probe positions
x (Å), with a normal prior on each parameter (log-normal for positive ones). The GP models
what the law leaves unexplained (an RBF kernel on position). Fitting is MAP (the parameters'
log posterior plus the GP's marginal likelihood), and a Laplace approximation at the MAP
point gives each parameter's standard deviation and the hypothesis's log evidence
(log p(data | hypothesis), the Bayesian score that compares hypotheses). This replaces
gpax's HMC (seconds to minutes per step on a CPU) by an optimisation of tens of milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gpytorch
import numpy as np
import torch

from scopeflow.errors import InputError

from .scoring import CandidateModel

# Added to the kernel matrix's diagonal (property units²) so its Cholesky factor exists when
# two measured positions nearly coincide; far below any measurement noise.
JITTER = 1e-8

Law = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Parameter:
    """One parameter of a law: prior Normal(``loc``, ``scale``) on its value, or on its
    logarithm when ``log`` (then ``loc`` and ``scale`` are of ln(value)); ``units`` for reports."""

    name: str
    loc: float
    scale: float
    units: str = ""
    log: bool = False

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise InputError(f"parameter {self.name!r}: prior scale must be > 0, got {self.scale}")

    def value(self, raw: torch.Tensor) -> torch.Tensor:
        """The parameter from its whitened coordinate (prior = standard normal on ``raw``)."""
        v = self.loc + self.scale * raw
        return torch.exp(v) if self.log else v

    def raw(self, value: float) -> float:
        """The whitened coordinate of a value (inverse of ``value``)."""
        v = math.log(value) if self.log else value
        return (v - self.loc) / self.scale


@dataclass(frozen=True)
class Hypothesis:
    """A named physical law ``law(x, params)`` → property at positions x (n, 2) Å."""

    name: str
    parameters: tuple[Parameter, ...]
    law: Law
    description: str = ""

    def __post_init__(self) -> None:
        names = [p.name for p in self.parameters]
        if not names or len(set(names)) != len(names):
            raise InputError(f"hypothesis {self.name!r} needs distinct, named parameters, got {names}")

    def evaluate(self, x: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """The law at positions x (…, n, 2) for whitened parameters ``raw`` (k,)."""
        params = {p.name: p.value(raw[i]) for i, p in enumerate(self.parameters)}
        return self.law(x, params)


class PhysicalMean(gpytorch.means.Mean):
    """A hypothesis as a gpytorch mean: its parameters, whitened, are one trainable vector."""

    def __init__(self, hypothesis: Hypothesis) -> None:
        super().__init__()
        self.hypothesis = hypothesis
        self.raw = torch.nn.Parameter(torch.zeros(len(hypothesis.parameters), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hypothesis.evaluate(x[..., :2], self.raw)


class _LinearisedMean(gpytorch.means.Mean):
    """f(x; r̂) − J(x) r̂ on inputs [position | … | J(x)] (the last ``len(r̂)`` columns)."""

    def __init__(self, hypothesis: Hypothesis, raw: torch.Tensor, jac_start: int) -> None:
        super().__init__()
        self.hypothesis, self.raw, self.jac_start = hypothesis, raw, jac_start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hypothesis.evaluate(x[..., :2], self.raw) - x[..., self.jac_start :] @ self.raw


class StructuredGP(gpytorch.models.ExactGP):
    """Exact GP: physical mean of position (the inputs' first two columns, Å) + a scaled RBF
    kernel on position, or on the columns after them (``kernel_dims``: image features)."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        likelihood: gpytorch.likelihoods.GaussianLikelihood,
        hypothesis: Hypothesis,
        lengthscale_prior: gpytorch.priors.Prior,
        outputscale_prior: gpytorch.priors.Prior,
        kernel_dims: torch.Tensor | None = None,
    ) -> None:
        super().__init__(x, y, likelihood)
        self.mean_module = PhysicalMean(hypothesis)
        dims = torch.arange(2) if kernel_dims is None else kernel_dims
        self.covar_module = gpytorch.kernels.ScaleKernel(
            gpytorch.kernels.RBFKernel(lengthscale_prior=lengthscale_prior, active_dims=dims),
            outputscale_prior=outputscale_prior,
        )

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


@dataclass
class Fit:
    """A hypothesis fitted by MAP: parameters (value, sd) in their units, and the evidence."""

    hypothesis: str
    params: dict[str, float]
    sd: dict[str, float]
    log_evidence: float  # nats, Laplace approximation over the law's parameters
    noise_sd: float  # property units
    residual_sd: float  # the kernel's output sd: what the law leaves unexplained
    lengthscale: float  # Å
    iterations: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "hypothesis": self.hypothesis,
            "params": self.params,
            "sd": self.sd,
            "log_evidence": self.log_evidence,
            "noise_sd": self.noise_sd,
            "residual_sd": self.residual_sd,
            "lengthscale_A": self.lengthscale,
        }


class StructuredSurrogate:
    """A ``StructuredGP`` over a fixed set of candidate positions (n, 2) Å.

    ``residual_lengthscale`` (Å) centres the kernel's lengthscale prior: what the law leaves
    is local structure under the probe, which varies on the scale of an interatomic spacing
    and the probe's delocalisation (1–3 Å), not across the field. ``residual_scale`` (property
    units) is the prior median of the residual's sd. Each ``fit`` warm-starts from the last
    and also screens ``n_starts`` fresh draws from the prior: laws with a position parameter
    (a centre, a wall) have several local optima. With ``law_uncertainty`` the posterior handed
    to scorers integrates the law's parameters (``_linearised_model``): for mapping; a campaign
    choosing points by it can lock onto a wrong optimum of the law it keeps confirming.
    """

    def __init__(
        self,
        positions: np.ndarray,
        hypothesis: Hypothesis,
        *,
        features: np.ndarray | None = None,
        residual_lengthscale: float = 2.0,
        residual_scale: float = 0.1,
        noise_floor: float = 1e-4,
        first_iters: int = 40,
        warm_iters: int = 25,
        n_starts: int = 32,
        lr: float = 0.1,
        seed: int = 0,
        law_uncertainty: bool = False,
    ) -> None:
        self.positions = torch.as_tensor(np.asarray(positions, dtype=np.float64))
        if self.positions.ndim != 2 or self.positions.shape[1] != 2:
            raise InputError(f"positions must be (n, 2) Å, got shape {tuple(self.positions.shape)}")
        # Inputs: [position | features]. The law sees position; the kernel sees the features when
        # given (e.g. survey patches, where local structure the law cannot explain is visible).
        self.inputs = self.positions
        self._kernel_dims: torch.Tensor | None = None
        if features is not None:
            f = torch.as_tensor(np.asarray(features, dtype=np.float64))
            if f.ndim != 2 or len(f) != len(self.positions):
                raise InputError(f"features must be (n, d) for the {len(self.positions)} candidates")
            self.inputs = torch.cat([self.positions, f], dim=1)
            self._kernel_dims = torch.arange(2, 2 + f.shape[1])
        self.hypothesis = hypothesis
        self.law_uncertainty = law_uncertainty
        self.first_iters, self.warm_iters, self.n_starts, self.lr = first_iters, warm_iters, n_starts, lr
        self.likelihood = gpytorch.likelihoods.GaussianLikelihood(
            noise_constraint=gpytorch.constraints.GreaterThan(noise_floor)
        ).double()
        if features is None:
            self._ls_prior = gpytorch.priors.LogNormalPrior(math.log(residual_lengthscale), 0.5)
        else:
            # On d image features nothing physical sets the scale: BoTorch's dimension-scaled
            # default (Hvarfner et al. 2024), LogNormal(√2 + ln(d)/2, √3), on unit-scale inputs.
            d = features.shape[1]
            self._ls_prior = gpytorch.priors.LogNormalPrior(math.sqrt(2) + 0.5 * math.log(d), math.sqrt(3))
        self._os_prior = gpytorch.priors.LogNormalPrior(2 * math.log(residual_scale), 1.0)
        self.model: StructuredGP | None = None
        self._gen = torch.Generator().manual_seed(seed)
        self._idx = torch.empty(0, dtype=torch.long)
        self._y = torch.empty(0, dtype=torch.float64)
        self.fits = 0

    @property
    def n_candidates(self) -> int:
        """How many candidates this surrogate predicts at."""
        return int(self.positions.shape[0])

    def fit(self, indices: Sequence[int], values: np.ndarray, *, noise_sd: float | None = None) -> Fit:
        """MAP fit to ``values`` measured at candidates ``indices``; parameters, sds and evidence.

        ``noise_sd`` (property units), when known (from counting statistics: ``counting_sd``),
        fixes the measurement noise instead of learning it. Learnt from tens of points, the
        noise trades off against the kernel's residual, and hypotheses whose fits land on
        different sides of that trade-off are then compared on it rather than on their laws.
        """
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        y = torch.as_tensor(np.asarray(values, dtype=np.float64))
        if len(idx) != len(y) or len(idx) < 2:
            raise InputError(
                f"fit needs ≥ 2 measured candidates with one value each, got {len(idx)}, {len(y)}"
            )
        if not torch.isfinite(y).all():
            raise InputError("measured values must be finite")
        x = self.inputs[idx]
        first = self.model is None
        if first:
            self.model = StructuredGP(
                x, y, self.likelihood, self.hypothesis, self._ls_prior, self._os_prior, self._kernel_dims
            ).double()
            self.model.covar_module.base_kernel.initialize(lengthscale=float(self._ls_prior.loc.exp()))
            self.model.covar_module.initialize(outputscale=float(self._os_prior.loc.exp()))
            spread = float(y.std()) if len(y) > 1 else 1.0
            self.likelihood.initialize(
                noise=max(
                    0.01 * spread**2, 2 * self.likelihood.noise_covar.raw_noise_constraint.lower_bound.item()
                )
            )
        else:
            self.model.set_train_data(x, y, strict=False)
        assert self.model is not None
        if noise_sd is not None:
            if not noise_sd > 0:
                raise InputError(f"noise sd must be > 0, got {noise_sd}")
            self.likelihood.noise = max(
                noise_sd**2, 2 * self.likelihood.noise_covar.raw_noise_constraint.lower_bound.item()
            )
            self.likelihood.noise_covar.raw_noise.requires_grad_(False)
        self._idx, self._y = idx, y
        self._screen(x, y, self.n_starts if first else max(4, self.n_starts // 4), keep_current=not first)
        iters = self.first_iters if first else self.warm_iters
        self._train(iters)
        self.fits += 1
        return self.report(iters)

    def _screen(self, x: torch.Tensor, y: torch.Tensor, n: int, *, keep_current: bool) -> None:
        # Draws from the prior (and the current point, once fitted), scored by the posterior
        # under the current kernel: the best becomes the start of the gradient steps. The
        # prior's centre is not a start: laws like a·tanh(k·x − c) sit on a saddle there.
        assert self.model is not None
        mean = self.model.mean_module
        k = len(self.hypothesis.parameters)
        starts = torch.randn(n, k, generator=self._gen, dtype=torch.float64)
        if keep_current:
            starts = torch.cat([mean.raw.detach().unsqueeze(0), starts])
        with torch.no_grad():
            chol = self._chol(x)
            scores = torch.stack([self._neg_log_post(r, x, y, chol) for r in starts])
        mean.raw.data.copy_(starts[int(torch.argmin(scores))])

    def _chol(self, x: torch.Tensor) -> torch.Tensor:
        assert self.model is not None
        with gpytorch.settings.lazily_evaluate_kernels(False):
            k = self.model.covar_module(x).to_dense()
        noise = self.likelihood.noise.reshape(-1)[0]
        return torch.linalg.cholesky(k + (noise + JITTER) * torch.eye(len(x), dtype=k.dtype))

    def _neg_log_post(
        self, raw: torch.Tensor, x: torch.Tensor, y: torch.Tensor, chol: torch.Tensor
    ) -> torch.Tensor:
        """−log p(y | θ) − log p(θ) (whitened θ, normalised), kernel fixed; nats."""
        r = (y - self.hypothesis.evaluate(x[..., :2], raw)).unsqueeze(-1)
        a = torch.linalg.solve_triangular(chol, r, upper=False)
        n, k = len(y), len(raw)
        data = 0.5 * (a**2).sum() + torch.log(torch.diagonal(chol)).sum() + 0.5 * n * math.log(2 * math.pi)
        return data + 0.5 * (raw**2).sum() + 0.5 * k * math.log(2 * math.pi)

    def _train(self, iters: int) -> None:
        # The negative log posterior written out (Cholesky of the n × n kernel matrix, n ≤ a
        # few hundred) rather than through gpytorch's marginal likelihood: the same value,
        # without ~10 ms of lazy-tensor bookkeeping per step (measured: 3-4× faster fits).
        assert self.model is not None
        model = self.model
        x, y = self.inputs[self._idx], self._y
        model.train()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=self.lr)
        for _ in range(iters):
            opt.zero_grad()
            loss = self._neg_log_post(model.mean_module.raw, x, y, self._chol(x))
            for _, module, prior, closure, _ in model.named_priors():
                loss = loss - prior.log_prob(closure(module)).sum()
            loss.backward()
            opt.step()
        model.eval()

    def report(self, iterations: int = 0) -> Fit:
        """Parameters at the MAP point with Laplace sds, and the Laplace log evidence."""
        assert self.model is not None
        x, y = self.inputs[self._idx], self._y
        raw = self.model.mean_module.raw.detach().clone()
        with torch.no_grad():
            chol = self._chol(x)
        hess = torch.autograd.functional.hessian(lambda r: self._neg_log_post(r, x, y, chol), raw)
        hess = 0.5 * (hess + hess.T)
        evals, evecs = torch.linalg.eigh(hess)
        # A flat direction (a parameter the data do not constrain yet) keeps its prior curvature.
        evals = evals.clamp_min(1.0)
        cov = (evecs / evals) @ evecs.T
        with torch.no_grad():
            nlp = float(self._neg_log_post(raw, x, y, chol))
        k = len(raw)
        log_evidence = -nlp + 0.5 * k * math.log(2 * math.pi) - 0.5 * float(torch.log(evals).sum())
        robust = self._sandwich(raw, x, y, chol, cov)
        params, sd, sd_laplace = {}, {}, {}
        raw_req = raw.clone().requires_grad_(True)
        for i, p in enumerate(self.hypothesis.parameters):
            v = p.value(raw_req[i])
            (g,) = torch.autograd.grad(v, raw_req)
            params[p.name] = float(v.detach())
            sd_laplace[p.name] = float(torch.sqrt(g @ cov @ g))
            # The larger of the two: the Laplace sd holds if the kernel describes the residual,
            # the sandwich if it does not; which one applies is not known from 30 points.
            sd[p.name] = max(sd_laplace[p.name], float(torch.sqrt(g @ robust @ g)))
        kern = self.model.covar_module
        return Fit(
            hypothesis=self.hypothesis.name,
            params=params,
            sd=sd,
            log_evidence=log_evidence,
            noise_sd=float(self.likelihood.noise.detach().sqrt().reshape(-1)[0]),
            residual_sd=float(kern.outputscale.detach().sqrt()),
            lengthscale=float(kern.base_kernel.lengthscale.detach().reshape(-1)[0]),
            iterations=iterations,
            extra={"sd_laplace": sd_laplace},
        )

    def _sandwich(
        self, raw: torch.Tensor, x: torch.Tensor, y: torch.Tensor, chol: torch.Tensor, cov: torch.Tensor
    ) -> torch.Tensor:
        """Covariance of the whitened parameters that holds when the kernel misjudges the residual
        (White 1980's sandwich, HC3 leverage correction of MacKinnon & White 1985).

        The Laplace covariance trusts the fitted kernel: when its output scale comes out below
        what the law leaves (a few vacancies' red-shifts among 30 points, or hyperparameters
        fitted by MAP from the same points), the sds are too small. In whitened coordinates
        (Cholesky of the kernel) the residuals are independent under the model, so each
        point's squared whitened residual measures its own misfit, the sandwich's meat.
        """
        jac = torch.autograd.functional.jacobian(lambda r: self.hypothesis.evaluate(x[..., :2], r), raw)
        with torch.no_grad():
            jw = torch.linalg.solve_triangular(chol, jac, upper=False)  # (n, k)
            r = (y - self.hypothesis.evaluate(x[..., :2], raw)).unsqueeze(-1)
            e = torch.linalg.solve_triangular(chol, r, upper=False).squeeze(-1)
            leverage = ((jw @ cov) * jw).sum(-1).clamp(max=0.99)
            scaled = jw * (e / (1.0 - leverage)).unsqueeze(-1)
            return cov @ (scaled.T @ scaled) @ cov

    def candidate_model(
        self, indices: Sequence[int] | None = None, values: np.ndarray | None = None
    ) -> CandidateModel:
        """The fitted GP as a BoTorch model over all candidates (the property's own units),
        conditioned on the data of the last fit or on ``indices``/``values`` (no refit)."""
        if self.model is None:
            raise InputError("the surrogate has not been fitted yet: call fit() first")
        idx = self._idx if indices is None else torch.as_tensor(np.asarray(indices, dtype=np.int64))
        y = self._y if values is None else torch.as_tensor(np.asarray(values, dtype=np.float64))
        if self.law_uncertainty:
            return self._linearised_model(idx, y)
        return CandidateModel(
            self.inputs, idx, y, self.likelihood, self.model.mean_module, self.model.covar_module
        )

    def _linearised_model(self, idx: torch.Tensor, y: torch.Tensor) -> CandidateModel:
        """The GP with the law's parameters integrated out, linearised at the MAP point
        (Rasmussen & Williams 2006, §2.7, explicit basis functions): with whitened parameters
        r ~ N(0, I) and f(x; r) ≈ f(x; r̂) + J(x)(r − r̂), the prior is a GP with mean
        f(x; r̂) − J(x) r̂ and kernel k(x, x') + J(x) J(x')ᵀ. Its posterior variance holds what
        the MAP law's does not: where the parameters are still uncertain, so that max-variance
        measures where they are decided, not only where the residual is unknown."""
        assert self.model is not None
        raw = self.model.mean_module.raw.detach().clone()
        positions = self.inputs[..., :2]
        jac = torch.autograd.functional.jacobian(
            lambda r: self.hypothesis.evaluate(positions, r), raw, vectorize=True, strategy="forward-mode"
        )
        z = torch.cat([self.inputs, jac], dim=1)
        k = len(raw)
        basis = gpytorch.kernels.LinearKernel(active_dims=torch.arange(z.shape[1] - k, z.shape[1])).double()
        basis.variance = 1.0  # the whitened parameters' prior is N(0, I)
        covar = self.model.covar_module + basis
        mean = _LinearisedMean(self.hypothesis, raw, z.shape[1] - k)
        return CandidateModel(z, idx, y, self.likelihood, mean, covar)

    def law_map(self) -> np.ndarray:
        """The fitted law alone at every candidate (property units)."""
        if self.model is None:
            raise InputError("the surrogate has not been fitted yet: call fit() first")
        with torch.no_grad():
            return self.model.mean_module(self.inputs).numpy()
