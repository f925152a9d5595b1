import numpy as np
import pytest

from scopeflow.errors import InputError
from tasks.drift import DriftMonitor, frame_proxies, select_members
from tasks.drift.calibration import MIN_REFERENCE, calibrate, change_inside, integrated_autocorrelation
from tasks.drift.edge_loop import monitor_status
from tasks.drift.physics import median_proxies


def _lattice(n=12, spacing=10.0, jitter=0.3, seed=0):
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2) * spacing + 5
    return g + rng.normal(0, jitter, g.shape)


def test_physics_proxies_see_missing_and_invented_columns():
    good = frame_proxies(_lattice(), (128, 128), 0.2)
    missing = frame_proxies(_lattice()[::2], (128, 128), 0.2)
    rng = np.random.default_rng(0)
    invented = frame_proxies(np.vstack([_lattice(), rng.uniform(0, 128, (60, 2))]), (128, 128), 0.2)
    assert good.nn_distance == pytest.approx(2.0, rel=0.05)
    assert missing.density < 0.6 * good.density
    assert invented.irregularity > good.irregularity + 0.2


def test_selection_prefers_members_that_agree_and_look_like_a_lattice():
    truth = [_lattice(seed=s) for s in range(3)]
    rng = np.random.default_rng(5)
    good = [[t + rng.normal(0, 0.2, t.shape) for t in truth] for _ in range(3)]
    broken = [[np.vstack([t[::3], rng.uniform(0, 128, (40, 2))]) for t in truth] for _ in range(2)]
    members = [broken[0], good[0], broken[1], good[1], good[2]]
    consensus = truth  # what the ensemble mean finds when most members still work
    reference = median_proxies([frame_proxies(t, (128, 128), 0.2) for t in truth])
    chosen = select_members(members, consensus, (128, 128), 0.2, reference)
    assert chosen.members == (1, 3, 4)


def _run_lengths(cal, stream):
    """Frames between false alarms of a calibrated detector set on a stationary ``stream``."""
    span = cal.window + cal.lookback
    alarms, last = [], 0
    for t in range(span, len(stream)):
        if t - last >= span and (cal.statistics(stream[t - span + 1 : t + 1]) > cal.threshold).any():
            alarms.append(t - last)
            last = t
    return alarms


@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_block_bootstrap_thresholds_keep_the_ert_on_stationary_streams(rho):
    # Simulation on stationary streams, independent and autocorrelated (the same area drifting).
    rng = np.random.default_rng(1)
    n, d = 6200, 3
    x = np.zeros((n, d))
    for t in range(1, n):
        x[t] = rho * x[t - 1] + np.sqrt(1 - rho**2) * rng.normal(size=d)
    cal = calibrate(x[:200], ("a", "b", "c"), ert=300, window=10, lookback=54, seed=1)
    alarms = _run_lengths(cal, x[200:])
    assert len(alarms) <= 2 * 6000 / 300  # never much more often than the user asked for
    assert len(alarms) >= 6000 / 300 / 6  # and not blind either
    if rho:
        assert cal.block >= 3  # blocks as long as the correlation lasts
        assert integrated_autocorrelation(x[:2000, 0]) == pytest.approx((1 + rho) / (1 - rho), rel=0.3)


def test_a_change_of_a_few_reference_spreads_is_caught_within_a_window():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(64, 2))
    cal = calibrate(ref, ("a", "b"), ert=1000, window=10, lookback=54)
    stream = np.vstack([rng.normal(size=(64, 2)), rng.normal(size=(30, 2)) + np.array([0.0, 3.0])])
    fired = [t for t in range(64, len(stream)) if (cal.statistics(stream[: t + 1]) > cal.threshold).any()]
    assert fired and fired[0] - 64 <= 10


def test_too_short_a_reference_is_refused():
    with pytest.raises(InputError, match="reference"):
        calibrate(np.zeros((3, 2)), ("a", "b"), ert=100, window=10, lookback=10)


def test_monitor_calibrates_then_decides_per_batch_and_names_what_changed():
    from tasks.acquisition.twin import DigitalTwin, DriftSchedule

    twin = DigitalTwin(seed=3, schedule=DriftSchedule.parse("dose=1e6@96"), shape=(96, 96))
    rng = np.random.default_rng(6)
    mon = DriftMonitor(ert=500, window=8, reference_frames=48)
    proxies = [frame_proxies(_lattice(seed=s), (128, 128), 0.2) for s in range(8)]
    decisions = []
    for start in range(0, 128, 8):
        frames = [twin.acquire(i).image for i in range(start, start + 8)]
        d = mon.observe(start, rng.normal(size=(8, 6)), rng.normal(0.1, 0.01, 8), proxies, frames, [0.12] * 8)
        decisions.append(d)
        if d.detected:
            break
    assert not any(d.detected for d in decisions[:12])
    assert decisions[-1].detected and 96 <= decisions[-1].first_alarm < 96 + 8
    assert decisions[-1].changed[0] == "dose"
    assert decisions[-1].attribution["dose_ratio"] == pytest.approx(0.2, rel=0.25)


def test_a_change_inside_a_stretch_is_found_where_it_is_and_noise_is_not_a_change():
    rng = np.random.default_rng(2)
    threshold, scale = np.array([4.0, 4.0]), np.array([1.0, 1.0])
    step = rng.normal(size=(26, 2)) + np.r_[np.zeros((13, 2)), np.tile([0.0, 4.0], (13, 1))]
    found = change_inside(step, threshold, scale, window=10, lookback=10)
    assert found is not None and abs(found[0] - 13) <= 1 and found[1][1] > 1 >= found[1][0]
    # Three times noisier than the calibration's scale, and no change: not a change.
    assert change_inside(3 * rng.normal(size=(26, 2)), threshold, scale, window=10, lookback=10) is None


@pytest.mark.parametrize("second", [144, 118])
def test_a_second_change_soon_after_a_detection_is_caught(second):
    # After a detection the monitor takes a new reference; a second change a few batches
    # later fell inside a reference of ``reference_frames`` frames and was never seen. Now the
    # monitor decides again after MIN_REFERENCE frames, under thresholds no lower than the last
    # full reference's, and a change inside those frames is found by the same standard.
    from tasks.acquisition.twin import DigitalTwin, DriftSchedule

    # 144: three batches after the first change; 118: inside the first frames of the new reference.
    schedule = DriftSchedule.parse(f"dose=1e6@96,dose=3e6@{second}")
    twin = DigitalTwin(seed=3, schedule=schedule, shape=(96, 96))
    rng = np.random.default_rng(6)
    mon = DriftMonitor(ert=500, window=8, reference_frames=48)
    proxies = [frame_proxies(_lattice(seed=s), (128, 128), 0.2) for s in range(16)]
    alarms, named = [], []
    for start in range(0, 176, 16):
        frames = [twin.acquire(i).image for i in range(start, start + 16)]
        d = mon.observe(
            start, rng.normal(size=(16, 6)), rng.normal(0.1, 0.01, 16), proxies, frames, [0.12] * 16
        )
        if d.detected:
            alarms.append(d.first_alarm)
            named.append((d.changed, d.attribution["dose_ratio"]))
            mon.rereference()
            if len(alarms) == 1:
                status = monitor_status(mon)
    assert len(alarms) == 2, alarms
    # What the edge tells the user meanwhile: the short reference it waits for, not 48 frames.
    assert f"of {MIN_REFERENCE} frames" in status, status
    assert 96 <= alarms[0] < 96 + 8 and second <= alarms[1] < second + 8
    assert named[1][0][0] == "dose" and named[1][1] == pytest.approx(3.0, rel=0.25)
    # A monitor resumed from the stored state mid-way decides exactly as this one: the last
    # full reference's thresholds and spectrum are part of the state.
    frames = [twin.acquire(i).image for i in range(176, 192)]
    emb, unc = rng.normal(size=(16, 6)), rng.normal(0.1, 0.01, 16)
    resumed = DriftMonitor(ert=500, window=8, reference_frames=48)
    resumed.restore(*mon.state())
    mon.settle()  # a growth calibration may still run in the background (the resumed one redid it)
    assert (mon.carried is None) == (resumed.carried is None) and (second == 118 or mon.carried is not None)
    a = mon.observe(176, emb, unc, proxies, frames, [0.12] * 16)
    b = resumed.observe(176, emb, unc, proxies, frames, [0.12] * 16)
    assert a.scores == pytest.approx(b.scores, nan_ok=True)


def test_the_defocus_bound_falls_as_one_over_root_frames():
    from tasks.acquisition.twin import DigitalTwin, DriftSchedule
    from tasks.drift.spectrum import SpectrumReference, defocus_bound, fit_defocus, image_stats

    twin = DigitalTwin(seed=5, schedule=DriftSchedule.parse("defocus=60@32"), shape=(96, 96))
    acquired = [twin.acquire(i) for i in range(48)]
    c = acquired[0].conditions
    optics = {"voltage_kv": c["voltage_kv"], "semiangle_mrad": c["semiangle_mrad"]}
    stats = [image_stats(f.image, f.pixel_size) for f in acquired]
    reference = SpectrumReference.fit(stats[:32])
    few, many = (
        defocus_bound(reference, stats[32 : 32 + n], (96, 96), **optics, defocus=60.0) for n in (4, 16)
    )
    assert 0 < many < few and many == pytest.approx(few / 2, rel=0.35)
    estimate, _, _ = fit_defocus(reference, stats[32:], (96, 96), **optics)
    # The fit stays within two of its 5 Å grid steps; that is several bounds (here 50 Å at a
    # bound of ~2 Å): the fit's bias, not the frames' information, limits it.
    assert abs(estimate - 60.0) <= 10.0


def _ring_stats(profile, ring_k, ring_bins):
    from tasks.drift.spectrum import PEAKS, ImageStats

    return ImageStats(1.0, 1e-4, profile, ring_k, np.full((PEAKS, 3), np.nan), 0.1, ring_bins)


def test_contrast_follows_the_lattice_rings_not_the_content_in_view():
    # A drifting sample brings content into view whose power sits in the weak low rings (×10
    # here); the lattice's strong rings hold. The contrast, taken where the fit's weight is,
    # must stay; a transfer loss at the lattice rings (×0.55, a 40 Å defocus at focus) must show.
    from tasks.drift.spectrum import SpectrumReference

    rings = 40
    ring_k = np.arange(rings) / 12.8
    ring_bins = np.maximum(np.pi * np.arange(rings), 1.0)
    base = np.full(rings, 1e-3)
    base[2:5] = 2.0  # content
    base[[6, 10]] = [20.0, 5.0]  # lattice reflections
    rng = np.random.default_rng(0)
    reference = SpectrumReference.fit(
        [_ring_stats(base * rng.normal(1.0, 0.01, rings), ring_k, ring_bins) for _ in range(20)]
    )
    content = base.copy()
    content[2:5] *= 10.0
    defocus = base.copy()
    defocus[[6, 10]] *= 0.55
    assert abs(reference.features(_ring_stats(content, ring_k, ring_bins))["contrast"]) < 0.1
    assert reference.features(_ring_stats(defocus, ring_k, ring_bins))["contrast"] == pytest.approx(
        np.log(0.55), abs=0.15
    )


def test_blur_and_contrast_thresholds_lie_between_one_and_two_depths_of_focus_of_defocus():
    # No alarm for less than a depth of focus (the content in view wanders by that much), and a
    # grown reference never hides twice that much.
    from tasks.acquisition.twin import DigitalTwin, DriftSchedule
    from tasks.drift.attribution import IMAGE_DETECTORS
    from tasks.drift.spectrum import depth_of_focus

    twin = DigitalTwin(seed=3, schedule=DriftSchedule.parse("contamination=0.1@0~200"), shape=(96, 96))
    c = twin.acquire(0).conditions
    optics = {"voltage_kv": c["voltage_kv"], "semiangle_mrad": c["semiangle_mrad"]}
    rng = np.random.default_rng(6)
    mon = DriftMonitor(ert=500, window=8, reference_frames=32, optics=optics)
    proxies = [frame_proxies(_lattice(seed=s), (128, 128), 0.2) for s in range(16)]
    depth = depth_of_focus(optics["voltage_kv"], optics["semiangle_mrad"])
    j = IMAGE_DETECTORS.index("contrast")
    seen = []
    for start in range(0, 144, 16):
        frames = [twin.acquire(i).image for i in range(start, start + 16)]
        mon.observe(start, rng.normal(size=(16, 6)), rng.normal(0.1, 0.01, 16), proxies, frames, [0.12] * 16)
        mon.settle()
        ref = mon.reference
        if ref is None or mon.calibrated_on in seen:
            continue
        seen.append(mon.calibrated_on)
        s0 = mon.history[0].image
        low, high = (
            ref.spectrum.defocus_response((96, 96), s0.pixel_size, **optics, change=change)[name]
            for change, name in ((depth, "contrast"), (2 * depth, "contrast"))
        )
        cal = ref.calibration
        assert cal.threshold[j] * cal.scale[j] >= low * (1 - 1e-9)
        if mon.calibrated_on > 32:
            assert cal.threshold[j] * cal.scale[j] <= max(low, high, mon.grown_from[j]) * (1 + 1e-9)
    assert len(seen) >= 2  # the first full reference and a grown one


def _spectra(schedule: str, n: int) -> tuple[dict, list, object, np.ndarray]:
    """Twin frames 0..n−1 (96², seed 7) under ``schedule``: the first frame's conditions, every
    frame's spectrum, the spectrum reference of the first 32 and their mean image features (as
    ``attribute`` takes them: the network's three detectors NaN)."""
    from tasks.acquisition.twin import DigitalTwin, DriftSchedule
    from tasks.drift.attribution import IMAGE_DETECTORS
    from tasks.drift.spectrum import SpectrumReference, image_stats

    twin = DigitalTwin(seed=7, schedule=DriftSchedule.parse(schedule), shape=(96, 96))
    acquired = [twin.acquire(i) for i in range(n)]
    stats = [image_stats(f.image, f.pixel_size) for f in acquired]
    reference = SpectrumReference.fit(stats[:32])
    before = np.array([reference.features(s)[k] for s in stats[:32] for k in IMAGE_DETECTORS])
    before = np.concatenate([before.reshape(32, -1).mean(axis=0), np.full(3, np.nan)])
    return acquired[0].conditions, stats, reference, before


@pytest.mark.parametrize(("schedule", "lattice"), [("region=1@32", True), ("source_size=0.6@32", False)])
def test_a_rotated_lattice_is_named_and_a_blur_is_not(schedule, lattice):
    # The twin's new region of graphene is rotated by a few degrees (inside the reflections'
    # matching tolerance: no new reflections); a larger source moves the reflections' power and
    # centroids along |k| but never round the origin.
    from tasks.drift.attribution import DETECTORS, attribute

    _, stats, reference, before = _spectra(schedule, 44)
    scores = dict.fromkeys(DETECTORS, float("nan")) | {"contrast": 2.0}
    changed, _, _, _ = attribute(reference, None, scores, stats[32:], before)  # type: ignore[arg-type]
    assert ("lattice" in changed) == lattice


@pytest.mark.parametrize(
    ("schedule", "named"), [("source_size=0.6@32", "blur"), ("defocus=60@32", "defocus")]
)
def test_a_larger_source_is_named_a_blur_and_a_defocus_a_defocus(schedule, named):
    # A source size is a Gaussian envelope: it empties the higher lattice orders first; a
    # defocus (Cs = 0) lowers the middle of the band and keeps the transfer near the aperture's
    # cutoff. The two one-parameter models, fitted without a free amplitude (OTF(0) = 1), tell
    # them apart where a free amplitude had named the larger source a defocus of 150 Å.
    from tasks.drift.attribution import DETECTORS, attribute

    c, stats, reference, before = _spectra(schedule, 44)
    optics = {"voltage_kv": c["voltage_kv"], "semiangle_mrad": c["semiangle_mrad"]}
    scores = dict.fromkeys(DETECTORS, float("nan")) | {"blur": 2.0, "contrast": 2.0}
    changed, att, _, _ = attribute(reference, None, scores, stats[34:], before, optics=optics)  # type: ignore[arg-type]
    assert named in changed and ({"blur", "defocus"} - {named}).isdisjoint(changed)
    if named == "blur":
        assert att["source_var_A2"] == pytest.approx(0.6**2 - c["source_size"] ** 2, abs=0.1)
        # The defocus is then estimated unchanged (the transfer's best fit kept for the record).
        assert att["defocus_change_A"] == 0.0 and np.isfinite(att["defocus_fit_A"])
    else:
        assert att["defocus_A"] == pytest.approx(60.0, abs=20.0)


def test_a_return_to_focus_seen_on_one_frame_is_named_a_defocus():
    # Near focus the transfer is even in defocus, so the Cramér–Rao bound at an estimate of
    # ~0 Å is enormous and "145 → 0 Å (±1500)" was named a contrast change. The fit's error is
    # its likelihood's spread over all candidates: wide near focus, but not that wide.
    from tasks.drift.attribution import DETECTORS, attribute

    c, stats, reference, before = _spectra("defocus=100@0,defocus=0@32", 34)
    optics = {"voltage_kv": c["voltage_kv"], "semiangle_mrad": c["semiangle_mrad"]}
    scores = dict.fromkeys(DETECTORS, float("nan")) | {"contrast": 2.0}
    changed, att, _, nxt = attribute(
        reference,
        None,  # type: ignore[arg-type]
        scores,
        stats[33:],
        before,
        optics=optics,
        reference_defocus=100.0,
    )
    assert "defocus" in changed and nxt is not None and nxt < 50.0
    assert att["defocus_A"] <= 2.0 * att["defocus_err_A"] < att["defocus_bound_A"]
