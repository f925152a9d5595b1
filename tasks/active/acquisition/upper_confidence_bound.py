"""Upper confidence bound (GP-UCB, Srinivas et al. 2010)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scopeflow.errors import InputError

from ..posterior import Posterior


@dataclass(frozen=True)
class UpperConfidenceBound:
    """mean + sqrt(beta) · std: ``beta`` = 0 exploits, large ``beta`` explores (dimensionless)."""

    beta: float = 4.0
    name: str = "ucb"

    def __post_init__(self) -> None:
        if self.beta < 0:
            raise InputError(f"UCB needs beta ≥ 0, got {self.beta}")

    def __call__(self, posterior: Posterior, best: float, rng: np.random.Generator) -> np.ndarray:
        return posterior.mean + np.sqrt(self.beta) * posterior.std
