"""The classical atom finder to beat: Gaussian smoothing, local maxima at the lattice spacing.

The first step of atomap (``get_atom_positions``): smooth the image, take local maxima no
closer than a fraction of the lattice's minimum column separation, keep those brighter than
a threshold; here refined to sub-pixel by the same three-point Gaussian fit the network's
heatmaps get, so the comparison is about detection, not about rounding. Tuned once on
in-distribution twin frames (``sigma``, ``threshold``), never per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from scopeflow.atoms import Atoms

from .peaks import find_peaks


@dataclass(frozen=True)
class ClassicalFinder:
    """Smoothing + local maxima + threshold; lengths relative to the minimum separation (Å).

    ``sigma`` — Gaussian smoothing, as a fraction of the minimum separation;
    ``spacing`` — the least distance between two maxima, as a fraction of it;
    ``threshold`` — a kept peak's smoothed value, as a fraction between the frame's 5th and
    99th percentiles of the smoothed image (rare bright dopants do not set the scale).
    """

    sigma: float = 0.15
    spacing: float = 0.7
    threshold: float = 0.25

    def locate(self, image: np.ndarray, pixel_size: float, min_separation: float) -> Atoms:
        """Columns of ``image`` (2-D counts) at ``pixel_size`` Å/px for a lattice whose columns
        are at least ``min_separation`` Å apart."""
        sep_px = min_separation / pixel_size
        smooth = gaussian_filter(np.asarray(image, np.float64), self.sigma * sep_px, mode="nearest")
        lo, hi = np.percentile(smooth, [5.0, 99.0])
        scaled = (smooth - lo) / max(hi - lo, 1e-12)
        # Shift to positive values so the log-parabola refinement is defined everywhere.
        maps = torch.from_numpy(np.clip(scaled, 0.0, None) + 1e-3)[None]
        radius = max(1, int(self.spacing * sep_px) // 2)
        idx, rowcol = find_peaks(maps, self.threshold, radius)
        values = maps[0, idx[:, 1], idx[:, 2]].numpy().astype(np.float32)
        return Atoms(
            rowcol=rowcol.numpy().astype(np.float32),
            uncertainty=np.zeros(len(idx), np.float32),
            score=values,
            cls=np.full(len(idx), -1, np.int8),
        )
