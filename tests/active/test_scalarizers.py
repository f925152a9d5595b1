"""Scalarizers recover the numbers put into synthetic spectra."""

from __future__ import annotations

import numpy as np
import pytest

from scopeflow.errors import InputError
from tasks.active import BandIntensity, PeakPosition, PeakRatio

E = np.linspace(0.0, 30.0, 301)  # 0.1 eV channels


def gauss(centre: float, sigma: float, area: float) -> np.ndarray:
    return area * 0.1 * np.exp(-((E - centre) ** 2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))


def test_band_intensity_removes_a_linear_background() -> None:
    spectra = np.stack([gauss(10.0, 0.3, 50.0) + 5.0 + 0.2 * E, 5.0 + 0.2 * E])
    values = BandIntensity(9.0, 11.0, flank=1.0)(E, spectra)
    assert values[0] == pytest.approx(50.0, rel=0.01)
    assert values[1] == pytest.approx(0.0, abs=1e-9)


def test_peak_position_subchannel() -> None:
    spectra = np.stack([gauss(c, 1.5, 100.0) for c in (14.03, 15.57)])
    np.testing.assert_allclose(PeakPosition(10.0, 20.0)(E, spectra), [14.03, 15.57], atol=0.02)


def test_peak_ratio() -> None:
    spectra = gauss(5.0, 0.3, 20.0) + gauss(15.0, 0.3, 80.0)
    ratio = PeakRatio(BandIntensity(4.0, 6.0), BandIntensity(14.0, 16.0))(E, spectra)
    assert ratio[0] == pytest.approx(0.25, rel=0.01)


def test_errors_name_the_problem() -> None:
    with pytest.raises(InputError, match="no channel"):
        BandIntensity(40.0, 50.0)(E, np.ones((1, len(E))))
    with pytest.raises(InputError, match="channels"):
        BandIntensity(1.0, 2.0)(E, np.ones((1, 10)))
