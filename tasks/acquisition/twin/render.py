"""HAADF image formation: columns splatted at sub-pixel positions, convolved with the probe,
distorted by the scan, counted with Poisson statistics and read with detector noise."""

from __future__ import annotations

import numpy as np

from .optics import probe_otf

# Detector fraction per unit Z-contrast weight, Å² (a carbon column scatters ~9e-4 Å² of
# the probe onto a 70-200 mrad annular detector at 60 kV, after multislice simulation).
CROSS_SECTION_PER_WEIGHT = 4.3e-5
AMORPHOUS_WEIGHT = 0.6 * 6**1.7  # a loosely packed carbon atom


def splat(shape: tuple[int, int], rowcol: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Point weights at sub-pixel (row, col) spread bilinearly onto a grid (centroid exact)."""
    ny, nx = shape
    out = np.zeros(ny * nx, dtype=np.float64)
    if len(rowcol) == 0:
        return out.reshape(shape)
    r0 = np.floor(rowcol[:, 0]).astype(np.int64)
    c0 = np.floor(rowcol[:, 1]).astype(np.int64)
    fr = rowcol[:, 0] - r0
    fc = rowcol[:, 1] - c0
    for dr, dc, f in (
        (0, 0, (1 - fr) * (1 - fc)),
        (0, 1, (1 - fr) * fc),
        (1, 0, fr * (1 - fc)),
        (1, 1, fr * fc),
    ):
        r, c = r0 + dr, c0 + dc
        ok = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
        out += np.bincount(r[ok] * nx + c[ok], weights=(weight * f)[ok], minlength=ny * nx)
    return out.reshape(shape)


def shift_rows(image: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Each row sampled ``shifts[row]`` pixels further along x (linear interpolation, edges clamp)."""
    ny, nx = image.shape
    x = np.arange(nx)[None, :] + shifts[:, None]
    x = np.clip(x, 0, nx - 1.000001)
    i0 = np.floor(x).astype(np.int64)
    f = x - i0
    rows = np.arange(ny)[:, None]
    return image[rows, i0] * (1 - f) + image[rows, i0 + 1] * f


def form_image(
    obj: np.ndarray,
    pixel_size: float,
    conditions: dict,
    rng: np.random.Generator,
    crop: int,
) -> np.ndarray:
    """Detector counts (float32) of a padded object map, cropped by ``crop`` px on each side.

    ``obj`` holds Z-contrast weight per pixel; ``conditions`` gives the optics (kV, mrad,
    defocus Å, Cs mm, source size Å), the dose (e/Å²), background fraction, read noise
    (counts) and the scan-line jitter (px).
    """
    otf = probe_otf(
        obj.shape,
        float(pixel_size),
        float(conditions["voltage_kv"]),
        float(conditions["semiangle_mrad"]),
        float(conditions["defocus"]),
        float(conditions["cs_mm"]),
        float(conditions["source_size"]),
    )
    blurred = np.fft.irfft2(np.fft.rfft2(obj) * otf, s=obj.shape)
    ny, nx = obj.shape
    blurred = blurred[crop : ny - crop, crop : nx - crop]
    if conditions["jitter"] > 0:
        blurred = shift_rows(blurred, rng.normal(0.0, conditions["jitter"], size=blurred.shape[0]))
    electrons_per_px = conditions["dose"] * pixel_size**2
    expected = electrons_per_px * (
        np.clip(blurred, 0, None) * CROSS_SECTION_PER_WEIGHT / pixel_size**2 + conditions["background"]
    )
    counts = rng.poisson(expected).astype(np.float32)
    if conditions["read_noise"] > 0:
        counts += rng.normal(0.0, conditions["read_noise"], size=counts.shape).astype(np.float32)
    return counts
