"""The cumulative dose and source-size tests against the anchor (``ReferenceKeeper.anchor_drift``):
a dose ramp too slow for the window statistics is caught and named a dose change; the same
stream without the ramp raises no alarm (the twin's slow stationary changes: ``test_defocus_drift``)."""

import numpy as np
import pytest

from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.drift import DriftMonitor, frame_proxies

BATCH = 16
N = 560


def _brightness_stream(ramp: float, seed: int = 41):
    """Twin frames (96² px, in focus, stationary) whose dose wanders like a sample whose
    brightness varies over the field (AR(1): 3 % standard deviation, correlation time 20 frames;
    the twin's periodic lattice keeps its counts within 0.2 %), times a dose ramp ×1 → ×``ramp``
    over 400 frames from frame 96. Returns optics, the true dose ratio per frame and the batches."""
    rng = np.random.default_rng(seed)
    phi = np.exp(-1 / 20)
    wander = np.zeros(N)
    for i in range(1, N):
        wander[i] = phi * wander[i - 1] + rng.normal(0, 0.03 * np.sqrt(1 - phi**2))
    truth = np.exp(np.clip((np.arange(N) - 96) / 400, 0, 1) * np.log(ramp))
    dose = 5e6 * truth * np.exp(wander)
    schedule = DriftSchedule.parse(",".join(f"dose={d:.6g}@{i}" for i, d in enumerate(dose)))
    twin = DigitalTwin(seed=seed, schedule=schedule, shape=(96, 96))
    acquired = [twin.acquire(i) for i in range(N)]
    frames = [a.image for a in acquired]
    c = acquired[0].conditions
    optics = {"voltage_kv": c["voltage_kv"], "semiangle_mrad": c["semiangle_mrad"]}
    g = np.stack(np.meshgrid(np.arange(12), np.arange(12), indexing="ij"), -1).reshape(-1, 2) * 10.0 + 5
    proxies = [frame_proxies(g, (128, 128), 0.2)] * BATCH
    batches = [
        (
            start,
            rng.normal(size=(BATCH, 6)),
            rng.normal(0.1, 0.01, BATCH),
            proxies,
            frames[start : start + BATCH],
            [a.pixel_size for a in acquired[start : start + BATCH]],
        )
        for start in range(0, N, BATCH)
    ]
    return optics, truth, batches


def _run(batches, optics):
    mon = DriftMonitor(ert=500, window=8, reference_frames=32, optics=optics)
    found, scores = [], []
    for batch in batches:
        d = mon.observe(*batch)
        scores.append(d.scores)
        if d.detected:
            found.append(d)
            mon.rereference()
    return found, scores


@pytest.mark.parametrize("ramp", [0.3, 3.0])
def test_a_slow_dose_ramp_is_caught_and_named_against_the_first_reference(ramp):
    # ×0.3 (or ×3) over 400 frames: 0.02 ln a window of 8, inside the window statistics' spread
    # on this sample's brightness wander, and a growing reference takes it in. Against the
    # first reference it is cumulative: named a dose change before it reaches the goal's size.
    optics, truth, batches = _brightness_stream(ramp)
    found, _ = _run(batches, optics)
    assert found, "the slow dose ramp raised no alarm"
    d = found[0]
    assert 96 < d.first_alarm < 96 + 400 and "dose" in d.changed
    assert d.scores["dose_drift"] > 1
    # The ratio is named against the first reference, within 25 % of the truth.
    assert d.attribution["dose_ratio"] == pytest.approx(truth[d.first_alarm - 8], rel=0.25)


def test_the_same_brightness_wander_without_a_ramp_raises_no_alarm():
    optics, _, batches = _brightness_stream(1.0)
    found, scores = _run(batches, optics)
    assert not found, [(d.first_alarm, d.summary) for d in found]
    tested = [s["dose_drift"] for s in scores if np.isfinite(s.get("dose_drift", np.nan))]
    assert len(tested) >= 20 and max(tested) < 1.0


def test_the_tests_share_one_false_alarm_per_ert():
    # Union bound: the three tests' false-alarm probabilities sum to the budget; a test whose
    # floor is far out (the dose's, ~100 errors) keeps its tiny probability and the others share
    # the rest; with no floor in play the split is Bonferroni's.
    from scipy.stats import t as student_t

    tails = DriftMonitor._tails(np.array([0.5, 100.0, 2.0]), 6, 0.016)
    assert tails.sum() == pytest.approx(0.016)
    assert tails[1] == pytest.approx(2 * student_t.sf(100.0, 6))
    assert tails[0] == pytest.approx(tails[2])
    assert np.allclose(DriftMonitor._tails(np.zeros(3), 6, 0.016), 0.016 / 3)
    # A test without an error gets no share.
    assert np.isnan(DriftMonitor._tails(np.array([np.nan, 0.0, 0.0]), 6, 0.016)[0])
