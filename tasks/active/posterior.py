"""A surrogate's belief about the scalarized property at every candidate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Posterior:
    """Marginal mean and variance per candidate (units of the scalarized property), and a
    sampler of joint draws over all candidates.

    ``draw(rng)`` returns one function sample (n,); without a joint sampler, draws are
    independent per candidate (right for known-answer tests, too rough for a real GP).
    """

    mean: np.ndarray
    variance: np.ndarray
    draw: Callable[[np.random.Generator], np.ndarray] | None = None

    @property
    def std(self) -> np.ndarray:
        """Standard deviation per candidate (variance clipped at 0 against round-off)."""
        return np.sqrt(np.clip(self.variance, 0.0, None))

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One draw of the property at every candidate."""
        if self.draw is not None:
            return self.draw(rng)
        return self.mean + self.std * rng.standard_normal(self.mean.shape)
