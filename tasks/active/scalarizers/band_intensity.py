"""Integrated intensity in an energy band, above a background read from its flanks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import as_spectra, window


@dataclass(frozen=True)
class BandIntensity:
    """Counts summed over [lo, hi] eV minus a linear background fitted to ``flank`` eV on each
    side (the tail of a neighbouring plasmon would otherwise dominate a weak band)."""

    lo: float
    hi: float
    flank: float = 0.0
    name: str = "band_intensity"

    def __call__(self, energy: np.ndarray, counts: np.ndarray) -> np.ndarray:
        c = as_spectra(counts, energy)
        band = window(energy, self.lo, self.hi)
        total = c[:, band].sum(axis=1)
        if self.flank <= 0:
            return total
        left = window(energy, self.lo - self.flank, self.lo) & ~band
        right = window(energy, self.hi, self.hi + self.flank) & ~band
        mask = left | right
        # Straight line through the flank channels, per spectrum (least squares), summed over the band.
        x = energy[mask]
        A = np.stack([np.ones_like(x), x - x.mean()], axis=1)
        coef, *_ = np.linalg.lstsq(A, c[:, mask].T, rcond=None)
        xb = energy[band] - x.mean()
        background = coef[0] * band.sum() + coef[1] * xb.sum()
        return total - background

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "lo_eV": self.lo, "hi_eV": self.hi, "flank_eV": self.flank}
