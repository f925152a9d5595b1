"""Energy of the strongest peak in a window (e.g. the plasmon, which shifts with strain)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .base import as_spectra, window


@dataclass(frozen=True)
class PeakPosition:
    """Peak energy (eV) in [lo, hi]: the maximum of the spectrum smoothed over ``smooth`` eV
    (rms), refined by a parabola through it and its neighbours (sub-channel precision)."""

    lo: float
    hi: float
    smooth: float = 0.5
    name: str = "peak_position"

    def __call__(self, energy: np.ndarray, counts: np.ndarray) -> np.ndarray:
        c = as_spectra(counts, energy)
        step = float(energy[1] - energy[0]) if len(energy) > 1 else 1.0
        s = gaussian_filter1d(c, self.smooth / step, axis=1, mode="nearest") if self.smooth > 0 else c
        idx = np.flatnonzero(window(energy, self.lo, self.hi))
        i = idx[np.argmax(s[:, idx], axis=1)]
        inner = (i > 0) & (i < len(energy) - 1)
        ic = np.clip(i, 1, len(energy) - 2)
        rows = np.arange(len(c))
        y0, y1, y2 = s[rows, ic - 1], s[rows, ic], s[rows, ic + 1]
        denom = y0 - 2 * y1 + y2
        offset = np.where(inner & (denom < 0), 0.5 * (y0 - y2) / np.where(denom < 0, denom, -1.0), 0.0)
        return energy[i] + np.clip(offset, -0.5, 0.5) * step

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "lo_eV": self.lo, "hi_eV": self.hi, "smooth_eV": self.smooth}
