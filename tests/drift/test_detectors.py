import numpy as np
import pytest

from scopeflow.errors import InputError
from tasks.drift import DriftMonitor, EmbeddingDetector, MeanShiftDetector, frame_proxies, select_members
from tasks.drift.calibration import window_inflation
from tasks.drift.physics import median_proxies


def _false_alarms(detector, draw, n):
    alarms = 0
    for _ in range(n):
        if detector.update(draw()) > detector.threshold:
            alarms += 1
            detector.restart()  # after an alarm, as the monitor re-references
    return alarms


def test_embedding_false_alarms_consistent_with_ert():
    rng = np.random.default_rng(1)
    det = EmbeddingDetector(ert=100, window=10, seed=1).fit(rng.normal(size=(160, 8)))
    alarms = _false_alarms(det, lambda: rng.normal(size=8), 3000)
    assert alarms <= 2 * 3000 / 100  # never much more often than the user asked for
    assert alarms >= 3000 / 100 / 5  # and not blind either


def test_mean_shift_false_alarms_consistent_with_ert():
    rng = np.random.default_rng(2)
    det = MeanShiftDetector(ert=100, window=10, seed=2).fit(rng.gamma(4.0, size=200))
    alarms = _false_alarms(det, lambda: rng.gamma(4.0), 3000)
    assert 3000 / 100 / 5 <= alarms <= 2 * 3000 / 100


def test_embedding_detects_a_known_shift_quickly():
    rng = np.random.default_rng(3)
    det = EmbeddingDetector(ert=1000, window=10).fit(rng.normal(size=(128, 16)))
    for _ in range(30):
        assert not det.update(rng.normal(size=16)) > det.threshold
    delay = next(t for t in range(1, 200) if det.update(rng.normal(size=16) + 0.6) > det.threshold)
    assert delay <= 15


def test_reference_too_small_is_refused():
    with pytest.raises(InputError, match="reference"):
        EmbeddingDetector().fit(np.zeros((3, 4)))


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


def test_monitor_calibrates_then_decides_per_batch():
    rng = np.random.default_rng(6)
    mon = DriftMonitor(ert=500, window=8, reference_frames=48)
    proxies = [frame_proxies(_lattice(seed=s), (128, 128), 0.2) for s in range(8)]

    def batch(start, shift=0.0, unc=0.1):
        emb = rng.normal(size=(8, 6)) + shift
        return mon.observe(start, emb, rng.normal(unc, 0.01, 8), proxies)

    for start in range(0, 48, 8):
        assert not batch(start).detected
    assert mon.calibrated
    quiet = [batch(start) for start in range(48, 160, 8)]
    assert sum(d.detected for d in quiet) <= 1
    shifted = batch(160, shift=6.0, unc=0.2)  # several reference spreads, like the twin's drifts
    assert shifted.detected
    assert {"embedding", "disagreement"} <= set(shifted.fired())


def test_autocorrelated_stationary_stream_keeps_the_ert():
    # Consecutive frames resemble each other (the same area drifting slowly through view).
    rng = np.random.default_rng(7)
    rho = 0.8

    def ar1(n, d=8):
        x = np.zeros((n, d))
        for t in range(1, n):
            x[t] = rho * x[t - 1] + np.sqrt(1 - rho**2) * rng.normal(size=d)
        return x

    stream = ar1(3200)
    det = EmbeddingDetector(ert=100, window=10, seed=7).fit(stream[:200])
    it = iter(stream[200:])
    alarms = _false_alarms(det, lambda: next(it), 3000)
    assert alarms <= 2 * 3000 / 100
    # and the widening is the finite-window one: 1 + 2·Σ(1 - k/W)·ρ^k, not (1 + ρ)/(1 - ρ) = 9
    expected = 1 + 2 * sum((1 - k / 10) * rho**k for k in range(1, 10))
    assert window_inflation(stream[:1000], 10) == pytest.approx(expected, rel=0.15)


def test_min_shift_keeps_small_significant_changes_quiet():
    # A shift the test can see but too small to matter for the network: no alarm with a floor.
    rng = np.random.default_rng(8)
    reference = rng.normal(1.0, 0.01, 200)
    strict = MeanShiftDetector(ert=1000, window=10).fit(reference)
    floored = MeanShiftDetector(ert=1000, window=10, min_shift=0.1).fit(reference)
    small = [strict.update(x) > strict.threshold for x in rng.normal(1.03, 0.01, 30)]
    assert any(small)
    assert not any(floored.update(x) > floored.threshold for x in rng.normal(1.03, 0.01, 30))
    assert any(floored.update(x) > floored.threshold for x in rng.normal(1.2, 0.01, 30))


def test_monitor_widens_its_reference_while_the_stream_is_quiet():
    rng = np.random.default_rng(9)
    mon = DriftMonitor(ert=500, window=8, reference_frames=32)
    proxies = [frame_proxies(_lattice(seed=s), (128, 128), 0.2) for s in range(8)]
    thresholds = []
    for start in range(0, 160, 8):
        mon.observe(start, rng.normal(size=(8, 6)), rng.normal(0.1, 0.01, 8), proxies)
        thresholds.append(mon.embedding.threshold)
    # calibrated at 32 frames, again at 64 and 128, never later
    changes = [i for i in range(1, len(thresholds)) if thresholds[i] != thresholds[i - 1]]
    assert [(i + 1) * 8 for i in changes] == [32, 64, 128]
