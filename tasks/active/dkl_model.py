"""A Gaussian process on (optionally learned) features: exact, or KISS-GP for many points."""

from __future__ import annotations

import gpytorch
import torch
from torch import nn

from scopeflow.errors import InputError


class DKLModel(gpytorch.models.ExactGP):
    """GP with ``feature_extractor`` in front of an ARD RBF kernel (deep kernel learning).

    With ``grid_size`` set, the kernel is structured kernel interpolation (KISS-GP, Wilson &
    Nickisch 2015) on a grid over the feature box (-1, 1)^d: O(n) per training step instead of
    O(n³), for campaigns of thousands of points. It needs the low-dimensional, bounded
    features a ``PatchFeatureExtractor`` gives. Without a feature extractor the GP sees the raw
    inputs with one shared lengthscale (the plain-GP baseline).
    """

    def __init__(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        likelihood: gpytorch.likelihoods.GaussianLikelihood,
        feature_extractor: nn.Module | None = None,
        grid_size: int | None = None,
    ) -> None:
        super().__init__(train_x, train_y, likelihood)
        self.feature_extractor = feature_extractor
        self.mean_module = gpytorch.means.ConstantMean()
        dims = getattr(feature_extractor, "out_dim", None)
        base = gpytorch.kernels.RBFKernel(ard_num_dims=dims)
        if grid_size is not None:
            if dims is None:
                raise InputError(
                    "KISS-GP needs a feature extractor with a small out_dim (no grid over raw inputs)"
                )
            base = gpytorch.kernels.GridInterpolationKernel(
                base, grid_size=grid_size, num_dims=dims, grid_bounds=[(-1.05, 1.05)] * dims
            )
        self.covar_module = gpytorch.kernels.ScaleKernel(base)

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        z = x if self.feature_extractor is None else self.feature_extractor(x)
        return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))
