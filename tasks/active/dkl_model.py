"""A Gaussian process on (optionally learned) features: exact, or KISS-GP for many points."""

from __future__ import annotations

import gpytorch
import torch
from torch import nn

from scopeflow.errors import InputError


class DKLModel(gpytorch.models.ExactGP):
    """GP with ``feature_extractor`` in front of an ARD RBF kernel (deep kernel learning).

    With ``inducing_points`` (m, d) set, the kernel is the sparse SGPR approximation (Titsias
    2009) on m inducing points in feature space: O(n m²) per training step instead of O(n³),
    for campaigns of thousands of points. (KISS-GP's grid would need grid_size^d points:
    fine for d = 2, a billion for the 4-d features used here.) Without a feature extractor
    the GP sees the raw inputs with one shared lengthscale (the plain-GP baseline).
    """

    def __init__(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        likelihood: gpytorch.likelihoods.GaussianLikelihood,
        feature_extractor: nn.Module | None = None,
        inducing_points: torch.Tensor | None = None,
        raw_kernel: bool = True,
    ) -> None:
        super().__init__(train_x, train_y, likelihood)
        self.feature_extractor = feature_extractor
        self.mean_module = gpytorch.means.ConstantMean()
        dims = getattr(feature_extractor, "out_dim", None)
        self.raw_kernel = raw_kernel and dims is not None and inducing_points is None
        if self.raw_kernel:
            assert dims is not None
            # Deep kernel + a plain kernel on the raw patches, side by side (the model's input is
            # [features | patches]). Trained on tens of labels, the features can collapse (one
            # lengthscale → 0: every candidate unlike its neighbours; Ober et al. 2021); the
            # plain part keeps the prior similarity of whole patches, the plain GP's strength,
            # and the marginal likelihood weighs the two by their output scales.
            d = train_x.shape[-1]
            deep = gpytorch.kernels.RBFKernel(ard_num_dims=dims, active_dims=torch.arange(dims))
            plain = gpytorch.kernels.RBFKernel(active_dims=torch.arange(dims, dims + d))
            self.covar_module = gpytorch.kernels.ScaleKernel(deep) + gpytorch.kernels.ScaleKernel(plain)
            return
        base = gpytorch.kernels.RBFKernel(ard_num_dims=dims)
        self.covar_module = gpytorch.kernels.ScaleKernel(base)
        if inducing_points is not None:
            if dims is None:
                raise InputError(
                    "a sparse GP here needs a feature extractor (inducing points live in feature space)"
                )
            self.covar_module = gpytorch.kernels.InducingPointKernel(
                self.covar_module, inducing_points=inducing_points.clone(), likelihood=likelihood
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the kernel sees: the learned features, next to the raw inputs with a raw kernel."""
        if self.feature_extractor is None:
            return x
        z = self.feature_extractor(x)
        return torch.cat([z, x], dim=-1) if self.raw_kernel else z

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        z = self.features(x)
        return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))
