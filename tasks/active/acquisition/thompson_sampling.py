"""Thompson sampling: measure the maximum of one draw from the posterior."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..posterior import Posterior


@dataclass(frozen=True)
class ThompsonSampling:
    """One joint posterior draw per call; its argmax is the candidate picked."""

    name: str = "thompson"

    def __call__(self, posterior: Posterior, best: float, rng: np.random.Generator) -> np.ndarray:
        return posterior.sample(rng)
