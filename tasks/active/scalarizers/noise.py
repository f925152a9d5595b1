"""How noisy a scalarized value is, from the counting statistics of its spectrum."""

from __future__ import annotations

import numpy as np

from .base import Scalarizer, as_spectra


def counting_sd(
    scalarizer: Scalarizer, energy: np.ndarray, counts: np.ndarray, rng: np.random.Generator, draws: int = 32
) -> np.ndarray:
    """Standard deviation (n,) of each spectrum's scalarized value under Poisson noise.

    A parametric bootstrap: each spectrum is redrawn ``draws`` times as Poisson counts with the
    measured counts as means and scalarized again. The counts are what a detector reports, so
    the noise of any scalarizer (a peak position, a ratio) follows without a formula per kind.
    """
    c = as_spectra(counts, energy)
    redrawn = rng.poisson(np.clip(c, 0, None)[None].repeat(draws, axis=0)).reshape(-1, c.shape[1])
    values = np.asarray(scalarizer(energy, redrawn), dtype=np.float64).reshape(draws, len(c))
    return values.std(axis=0, ddof=1)
