"""The twin's spectrum channel: structure shows in the spectrum, noise and cost are as stated."""

from __future__ import annotations

import numpy as np
import pytest

from scopeflow.errors import InputError
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.acquisition.twin.spectra import PEAKS, SpectrumChannel
from tasks.active import BandIntensity, PeakPosition


@pytest.fixture(scope="module")
def channel() -> SpectrumChannel:
    base = {"pixel_size": 0.16, "vacancy_rate": 0.03, "substitution_rate": 0.02}
    return SpectrumChannel(DigitalTwin(3, schedule=DriftSchedule(base=base)))


def test_dopant_band_peaks_on_dopants(channel: SpectrumChannel) -> None:
    grid = np.stack(np.meshgrid(np.arange(20, 236, 6.0), np.arange(20, 236, 6.0), indexing="ij"), -1).reshape(
        -1, 2
    )
    st = channel.structure(grid)
    p = PEAKS["graphene"]
    band = BandIntensity(p.dopant_ev - 0.8, p.dopant_ev + 0.8, flank=1.0)(
        channel.energy, channel.expected(grid)
    )
    near, far = st.dopants > 0.5, st.dopants < 0.01
    assert near.any()
    assert band[near].min() > 5 * max(band[far].max(), 1.0)


def test_expected_is_deterministic_and_measure_is_poisson(channel: SpectrumChannel) -> None:
    rc = np.full((400, 2), 100.0)
    lam = channel.expected(rc[:1])
    np.testing.assert_array_equal(lam, channel.expected(rc[:1]))
    counts = channel.measure(rc).counts
    np.testing.assert_allclose(counts.mean(axis=0), lam[0], atol=4 * np.sqrt(lam[0].max() / 400) + 0.05)


def test_cost_and_dose(channel: SpectrumChannel) -> None:
    m = channel.measure(np.array([[50.0, 60.0], [70.0, 80.0]]))
    np.testing.assert_allclose(m.seconds, channel.dwell + channel.settle)
    assert (m.dose > 0).all()
    assert m.counts.shape == (2, len(channel.energy))


def test_strain_shifts_the_plasmon(channel: SpectrumChannel) -> None:
    grid = np.stack(
        np.meshgrid(np.arange(20, 236, 12.0), np.arange(20, 236, 12.0), indexing="ij"), -1
    ).reshape(-1, 2)
    st = channel.structure(grid)
    clean = (st.vacancies < 0.01) & (st.dopants < 0.01)
    e_p = PeakPosition(10.0, 20.0)(channel.energy, channel.expected(grid))
    assert np.corrcoef(st.strain[clean], e_p[clean])[0, 1] < -0.9  # compression (−) blue-shifts


def test_outside_the_frame_is_refused(channel: SpectrumChannel) -> None:
    with pytest.raises(InputError, match="inside"):
        channel.measure(np.array([[-1.0, 5.0]]))
