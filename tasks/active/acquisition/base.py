"""What an acquisition function is: a score per candidate from a posterior (higher = measure first)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..posterior import Posterior


@runtime_checkable
class AcquisitionFunction(Protocol):
    """Scores candidates for the next measurement, maximising the scalarized property."""

    name: str

    def __call__(self, posterior: Posterior, best: float, rng: np.random.Generator) -> np.ndarray:
        """Score (n,) per candidate given the best value measured so far."""
        ...
