"""The neural half of deep kernel learning: image patch → a few features the GP's kernel sees."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from scopeflow.errors import InputError


class PatchFeatureExtractor(nn.Module):
    """Flattened patches (n, size²) → features (n, ``out_dim``) in (-1, 1).

    A fixed projection onto the leading ``n_components`` principal components of all candidate
    patches (the survey image, unlabelled) feeds a trainable linear map plus a small MLP
    residual. The projection is fitted once, not trained: with tens of labelled points a
    trainable first layer of size² × k weights only memorises them, while the survey's own
    statistics are free and plentiful. Components keep their relative variance (no
    whitening: the weak ones are mostly shot noise). The linear map starts on the leading
    ``out_dim`` components and the residual at zero, so the untrained model is a GP on the
    survey's main modes of variation, and training only has to bend it. The tanh keeps
    features on a fixed box, which a KISS-GP grid needs.
    """

    def __init__(
        self,
        candidates: np.ndarray,
        *,
        n_components: int = 32,
        hidden: int = 32,
        out_dim: int = 2,
        whiten: bool = False,
    ) -> None:
        super().__init__()
        x = np.asarray(candidates, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise InputError(f"feature extractor needs candidates of shape (n ≥ 2, d), got {x.shape}")
        k = min(n_components, x.shape[0] - 1, x.shape[1])
        if out_dim > k:
            raise InputError(f"out_dim {out_dim} exceeds the {k} principal components available")
        mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        sd = s[:k] / np.sqrt(len(x) - 1)
        scale = np.maximum(sd, 1e-8) if whiten else np.full(k, max(sd[0], 1e-8))
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("projection", torch.as_tensor(vt[:k].T / scale, dtype=torch.float32))
        self.linear = nn.Linear(k, out_dim)
        self.residual = nn.Sequential(nn.Linear(k, hidden), nn.SiLU(), nn.Linear(hidden, out_dim))
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()
            # Leading components at about half the tanh's range: informative, not saturated.
            lead = torch.as_tensor(scale[0] / np.maximum(sd[:out_dim], 1e-8) * 0.5, dtype=torch.float32)
            self.linear.weight[torch.arange(out_dim), torch.arange(out_dim)] = (
                lead if whiten else 0.5 * lead / lead
            )
            self.residual[-1].weight.zero_()
            self.residual[-1].bias.zero_()
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) @ self.projection
        return torch.tanh(self.linear(z) + self.residual(z))
