"""Attribution on frames the twin did not make: what a rotation is, and what a source step is."""

import numpy as np
import pytest

from tasks.drift.attribution import _lattice_moved
from tasks.drift.spectrum import PEAKS, ImageStats, SpectrumReference, fit_defocus, fit_envelope, image_stats

OPTICS = {"voltage_kv": 60.0, "semiangle_mrad": 25.0}
P = 0.1  # Å/px
SIDE = 128


def _peaks_stats(angles_deg, k=0.36, seed=0, scatter=0.03):
    # A spectrum summary holding only reflections at ``angles_deg`` (each with its Friedel
    # mate), centroids scattered by ``scatter``° from frame to frame.
    rng = np.random.default_rng(seed)
    rings = 40
    ring_k = np.arange(rings) / (SIDE * P)
    bins = np.maximum(np.pi * np.arange(rings), 1.0)
    peaks = np.full((PEAKS, 3), np.nan)
    for i, a in enumerate(angles_deg):
        t = np.radians(a + rng.normal(0.0, scatter))
        for j, sign in enumerate((1.0, -1.0)):
            peaks[2 * i + j] = [sign * k * np.sin(t), sign * k * np.cos(t), 1000.0 - i]
    return ImageStats(1.0, 1e-4, np.full(rings, 1e-3), ring_k, peaks, P, bins)


def test_reflections_wandering_each_their_own_way_are_not_a_rotation_but_turning_together_are():
    # On drifting crops each reflection's centroid is pulled by what its window lobe overlaps
    # (held-out MoS2: +1.0° at 30°, -0.9° at 90°, ~0 at -30°, the median of the strongest
    # peaks moving 0.2-0.4°): no rotation. A lattice turned by half a degree turns all three.
    lattice = np.array([30.0, 90.0, -30.0])
    reference = SpectrumReference.fit([_peaks_stats(lattice, seed=s) for s in range(32)])
    wander = [_peaks_stats(lattice + np.array([1.0, -0.6, 0.3]), seed=100 + s) for s in range(16)]
    turned = [_peaks_stats(lattice - 0.5, seed=200 + s) for s in range(16)]
    assert not _lattice_moved(reference, wander)
    assert _lattice_moved(reference, turned)


def _hexagonal(k, angle_deg, shift, amplitude=0.4, second=0.0):
    # Noise-free frame of a hexagonal lattice (first order |g| = k 1/Å; the second, √3 k at 30°
    # to it, of amplitude ``second``), shifted by ``shift`` Å.
    y, x = np.mgrid[0:SIDE, 0:SIDE] * P
    image = np.ones((SIDE, SIDE))
    orders = [(k, a, amplitude) for a in angle_deg + np.array([0.0, 60.0, 120.0])]
    orders += [(np.sqrt(3) * k, a, second) for a in angle_deg + np.array([30.0, 90.0, 150.0])]
    for size, a, amp in orders:
        g = size * np.array([np.sin(np.radians(a)), np.cos(np.radians(a))])
        image += amp * np.cos(2 * np.pi * (g[0] * (y + shift[0]) + g[1] * (x + shift[1])))
    return image


def _source_blur(image, sigma):
    # A Gaussian source of σ Å on a periodic frame: exp(-2π²σ²k²) on the amplitude.
    ky = np.fft.fftfreq(SIDE, d=P)[:, None]
    kx = np.fft.rfftfreq(SIDE, d=P)[None, :]
    return np.fft.irfft2(
        np.fft.rfft2(image) * np.exp(-2 * np.pi**2 * sigma**2 * (ky**2 + kx**2)), s=image.shape
    )


def test_a_reflection_beside_the_ky_axis_is_measured_at_its_angle():
    # The kx = 0 column's neighbour is the mirror of kx = +1: a centroid clipped there counted
    # the kx = 0 column twice and pulled a reflection at ~90° off its angle by ~1°.
    rng = np.random.default_rng(3)
    angles = []
    for _ in range(16):
        frame = rng.poisson(_hexagonal(0.36, 89.6, rng.uniform(0, 20, 2)) * 200.0)
        pk = image_stats(frame, P).peaks
        pk = pk[np.isfinite(pk[:, 0])]
        folded = np.where((pk[:, 1] < 0)[:, None], -pk[:, :2], pk[:, :2])
        a = np.degrees(np.arctan2(folded[:, 0], folded[:, 1]))
        a = (a + 90.0) % 180.0 - 90.0  # ±90° are one direction
        near = np.abs(np.abs(a) - 89.6) < 5.0
        angles.append(float(np.median(np.abs(a[near]))))
    assert np.median(angles) == pytest.approx(89.6, abs=0.3) and np.std(angles) < 0.3


def test_a_larger_source_on_one_lattice_order_is_an_envelope_not_a_defocus():
    # hBN at 65 counts/px: the first order (0.46 1/Å) carries the signal, and its window lobe
    # fills the rings either side, which all drop as it does (×0.08 for +0.3 Å on 0.35 Å); the
    # weak second order is lost (an upper limit: a defocus would have kept it). Seen through the
    # window's leakage the envelope fits; judged at each ring's own |k| it misfitted worse than
    # a 75 Å defocus.
    def frames(sigma, n, seed):
        r = np.random.default_rng(seed)
        return [
            image_stats(
                r.poisson(
                    _source_blur(_hexagonal(0.46, 13.0, r.uniform(0, 20, 2), second=0.15), sigma) * 65.0
                ),
                P,
            )
            for _ in range(n)
        ]

    reference = SpectrumReference.fit(frames(0.35, 32, 1))
    after = frames(0.65, 16, 2)
    var, envelope_misfit = fit_envelope(reference, after, (SIDE, SIDE), **OPTICS)
    _, _, defocus_misfit = fit_defocus(reference, after, (SIDE, SIDE), **OPTICS)
    assert var == pytest.approx(0.65**2 - 0.35**2, abs=0.05)
    assert envelope_misfit < defocus_misfit


def test_a_reflection_at_the_nyquist_column_is_measured_not_a_crash():
    # A peak in the last column of the half-plane (kx = n/2) has its right neighbour at
    # -(n/2 - 1): summarising such a frame had raised IndexError (a MoS2 twin stream at 2·10⁶).
    from tasks.drift.spectrum import image_stats

    y, x = np.mgrid[0:SIDE, 0:SIDE]
    image = 100.0 + 40.0 * np.cos(np.pi * x + 2 * np.pi * 10 * y / SIDE)
    s = image_stats(image, P)
    strongest = s.peaks[np.nanargmax(s.peaks[:, 2])]
    assert abs(abs(strongest[1]) - 0.5 / P) < 1.0 / (SIDE * P)
