"""Ratio of two band intensities (e.g. defect state over plasmon: a defect density per mass)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .band_intensity import BandIntensity


@dataclass(frozen=True)
class PeakRatio:
    """``numerator`` band over ``denominator`` band (dimensionless); the denominator is floored
    at ``floor`` counts so empty spectra do not divide by zero."""

    numerator: BandIntensity
    denominator: BandIntensity
    floor: float = 1.0
    name: str = "peak_ratio"

    def __call__(self, energy: np.ndarray, counts: np.ndarray) -> np.ndarray:
        num = self.numerator(energy, counts)
        den = self.denominator(energy, counts)
        return num / np.maximum(den, self.floor)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "numerator": self.numerator.describe(),
            "denominator": self.denominator.describe(),
            "floor": self.floor,
        }
