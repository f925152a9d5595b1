"""Scalarizers: a spectrum reduced to the one number the campaign maximises."""

from .band_intensity import BandIntensity
from .base import Scalarizer
from .noise import counting_sd
from .peak_position import PeakPosition
from .peak_ratio import PeakRatio

__all__ = ["BandIntensity", "PeakPosition", "PeakRatio", "Scalarizer", "counting_sd"]
