"""Twin conditions that reproduce drifted frames, estimated from the frames alone (no labels).

Retraining needs twin frames that look like what the microscope now shows. We summarise a
frame by statistics that the conditions move — mean counts (dose), contrast and the share of
high spatial frequencies (defocus and probe blur), low-frequency variance (contamination) —
render small twin frames over a grid of candidate conditions, and keep the nearest.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from tasks.acquisition.twin import LATTICES, DigitalTwin, DriftSchedule

DOSES = tuple(float(d) for d in np.geomspace(2e4, 5e7, 10))
DEFOCI = (0.0, 20.0, 40.0, 60.0, 80.0, 110.0, 140.0)
CONTAMINATION = (0.0, 0.5)


def frame_statistics(image: np.ndarray, pixel_size: float) -> np.ndarray:
    """(log mean counts, contrast, high-frequency share, low-frequency share) of one frame."""
    img = np.asarray(image, np.float64)
    mean = max(img.mean(), 1e-6)
    power = np.abs(np.fft.rfft2(img - img.mean())) ** 2
    ky = np.fft.fftfreq(img.shape[0], d=pixel_size)[:, None]
    kx = np.fft.rfftfreq(img.shape[1], d=pixel_size)[None, :]
    k = np.hypot(ky, kx)
    total = max(power.sum(), 1e-12)
    return np.array(
        [
            np.log(mean),
            img.std() / mean,
            power[(k > 0.45) & (k < 1.2)].sum() / total,  # lattice fringes, 0.8–2.2 Å
            power[(k > 0) & (k < 0.12)].sum() / total,  # patches over 8 Å
        ]
    )


def lattice_columns(name: str) -> tuple[float, float]:
    """What lattice ``name`` implies for its columns: nearest spacing (Å) and density (columns/Å²)."""
    lat = LATTICES[name]
    return lat.min_separation, len(lat.sites) / abs(np.linalg.det(lat.vectors()))


def lattice_from_columns(nn_distance: float, density: float) -> str:
    """The twin lattice whose column spacing (Å) and density (columns/Å²) are nearest.

    Spacing counts double: a network under drift invents or misses a few columns, which moves
    the density, while the median nearest-neighbour spacing holds.
    """

    def mismatch(name: str) -> float:
        spacing, implied = lattice_columns(name)
        return 2.0 * abs(np.log(nn_distance / spacing)) + abs(np.log(density / implied))

    return min(LATTICES, key=mismatch)


def estimate_conditions(
    frames: Sequence[np.ndarray], pixel_size: float, lattice: str, *, side: int = 128, seed: int = 0
) -> dict[str, Any]:
    """Twin conditions (dose e/Å², defocus Å, contamination) nearest to the frames' statistics."""
    target = np.median([frame_statistics(f, pixel_size) for f in frames], axis=0)
    candidates, stats = [], []
    for dose, defocus, contamination in itertools.product(DOSES, DEFOCI, CONTAMINATION):
        base = {
            "lattice": lattice,
            "pixel_size": pixel_size,
            "dose": dose,
            "defocus": defocus,
            "contamination": contamination,
        }
        twin = DigitalTwin(seed=seed, schedule=DriftSchedule(base=base), shape=(side, side))
        candidates.append(base)
        stats.append(
            np.median([frame_statistics(twin.acquire(i).image, pixel_size) for i in range(2)], axis=0)
        )
    stats_arr = np.array(stats)
    scale = stats_arr.std(axis=0) + 1e-9
    best = int(np.argmin((((stats_arr - target) / scale) ** 2).sum(axis=1)))
    return candidates[best]
