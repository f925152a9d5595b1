"""Probe formation of an aberration-corrected STEM, for incoherent (HAADF) imaging (physics
shared by the twin, which renders with it, and drift detection, which fits it to spectra).

The HAADF image is modelled as the object's Z-contrast map convolved with the probe's
intensity; the probe comes from the condenser aperture and the aberration function
chi(k) = pi*lambda*df*k^2 + pi/2*Cs*lambda^3*k^4, blurred by a Gaussian source of
standard deviation ``source_size``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å at an accelerating voltage in kV."""
    v = voltage_kv * 1e3
    return float(12.2643 / np.sqrt(v * (1.0 + 0.97845e-6 * v)))


@lru_cache(maxsize=64)
def probe_otf(
    shape: tuple[int, int],
    pixel_size: float,
    voltage_kv: float,
    semiangle_mrad: float,
    defocus: float,
    cs_mm: float,
    source_size: float,
) -> np.ndarray:
    """Optical transfer function (rfft2 layout) of the probe intensity on a periodic grid.

    ``pixel_size``, ``defocus`` and ``source_size`` in Å; ``cs_mm`` in mm. The returned
    array multiplies ``numpy.fft.rfft2`` of an object map; its zero frequency is 1, so the
    total intensity is preserved. Cached: conditions change rarely between frames.
    """
    ny, nx = shape
    lam = wavelength(voltage_kv)
    ky = np.fft.fftfreq(ny, d=pixel_size)[:, None]
    kx = np.fft.fftfreq(nx, d=pixel_size)[None, :]
    k2 = kx**2 + ky**2
    kmax = semiangle_mrad * 1e-3 / lam
    aperture = k2 <= kmax**2
    cs = cs_mm * 1e7
    chi = np.pi * lam * defocus * k2 + 0.5 * np.pi * cs * lam**3 * k2**2
    psi = np.fft.ifft2(aperture * np.exp(-1j * chi))
    intensity = np.abs(psi) ** 2
    otf = np.fft.rfft2(intensity / intensity.sum())
    kx_r = np.fft.rfftfreq(nx, d=pixel_size)[None, :]
    otf *= np.exp(-2.0 * np.pi**2 * source_size**2 * (kx_r**2 + ky**2))
    otf.setflags(write=False)
    return otf
