"""Expected improvement over the best measurement (Jones et al. 1998), for maximisation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from ..posterior import Posterior


@dataclass(frozen=True)
class ExpectedImprovement:
    """E[max(f - best - xi, 0)] under the Gaussian posterior; ``xi`` ≥ 0 buys exploration
    (units of the property)."""

    xi: float = 0.0
    name: str = "ei"

    def __call__(self, posterior: Posterior, best: float, rng: np.random.Generator) -> np.ndarray:
        gain = posterior.mean - best - self.xi
        std = posterior.std
        safe = np.where(std > 0, std, 1.0)
        z = gain / safe
        ei = gain * norm.cdf(z) + std * norm.pdf(z)
        # Where the posterior is certain, the improvement is known exactly.
        return np.where(std > 0, ei, np.clip(gain, 0.0, None))
