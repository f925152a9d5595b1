"""Pure exploration: measure where the surrogate is least certain."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..posterior import Posterior


@dataclass(frozen=True)
class MaxVariance:
    """The posterior variance itself (units of the property squared)."""

    name: str = "maxvar"

    def __call__(self, posterior: Posterior, best: float, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(posterior.variance, dtype=np.float64).copy()
