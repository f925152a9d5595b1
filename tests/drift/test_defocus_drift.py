"""The cumulative defocus test against the first full reference (``defocus_drift``): a ramp too
slow for the window statistics is caught, and the twin's slow stationary changes are not."""

import numpy as np
import pytest

from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.drift import DriftMonitor, frame_proxies
from tasks.drift.reference import CUMULATIVE

BATCH = 16


def _monitor_and_stream(schedule: str, n: int, seed: int):
    twin = DigitalTwin(seed=seed, schedule=DriftSchedule.parse(schedule), shape=(96, 96))
    acquired = [twin.acquire(i) for i in range(n)]
    c = acquired[0].conditions
    optics = {"voltage_kv": c["voltage_kv"], "semiangle_mrad": c["semiangle_mrad"]}
    g = np.stack(np.meshgrid(np.arange(12), np.arange(12), indexing="ij"), -1).reshape(-1, 2) * 10.0 + 5
    proxies = [frame_proxies(g, (128, 128), 0.2)] * BATCH
    rng = np.random.default_rng(6)
    batches = [
        (
            start,
            rng.normal(size=(BATCH, 6)),
            rng.normal(0.1, 0.01, BATCH),
            proxies,
            [a.image for a in acquired[start : start + BATCH]],
            [a.pixel_size for a in acquired[start : start + BATCH]],
        )
        for start in range(0, n, BATCH)
    ]
    return optics, [a.conditions["defocus"] for a in acquired], batches


def test_a_slow_defocus_ramp_is_caught_and_named_against_the_first_reference():
    # 0 → 80 Å over 256 frames (0.3 Å a frame): each window moves less than the blur and
    # contrast thresholds, and the reference growing to 128 frames takes the start of the ramp
    # into itself. Without the cumulative test this stream alarmed at 328 (75 Å), named a source
    # change.
    optics, defocus, batches = _monitor_and_stream("defocus=80@96~256", 320, 7)
    mon = DriftMonitor(ert=500, window=8, reference_frames=32, optics=optics)
    found = []
    for batch in batches:
        if batch[0] == 240 and not found:
            # A monitor resumed from the stored state decides as this one: the frames the
            # cumulative test fits are part of the state.
            mon.settle()
            resumed = DriftMonitor(ert=500, window=8, reference_frames=32, optics=optics)
            resumed.restore(*mon.state())
            assert resumed.observe(*batch).scores == pytest.approx(mon.observe(*batch).scores, nan_ok=True)
            continue
        d = mon.observe(*batch)
        if d.detected:
            found.append(d)
            break
    assert len(found) == 1
    d = found[0]
    assert 96 < d.first_alarm < 96 + 256 and "defocus" in d.changed
    # A cumulative test's alarm (the source test's envelope may see the blur first: the
    # attribution then names the defocus).
    assert max(d.scores[t] for t in ("defocus", "source_drift")) > 1
    assert d.attribution["defocus_A"] == pytest.approx(defocus[d.first_alarm], abs=20.0)


def test_contamination_and_sample_drift_raise_no_cumulative_alarm():
    # The twin's stationary stream: slow sample drift, scan jitter, contamination growing to
    # 10 % of the area (it moves the contrast against the first reference by +0.6 ln over 250
    # frames; the fitted defocus stays within the depth of focus, the counts within 4 %): none
    # of the cumulative tests (defocus, dose, source size) fires.
    optics, _, batches = _monitor_and_stream("contamination=0.1@0~320", 320, 3)
    mon = DriftMonitor(ert=500, window=8, reference_frames=32, optics=optics)
    scores = []
    for batch in batches:
        d = mon.observe(*batch)
        assert "defocus" not in d.changed
        scores.append(d.scores)
        if d.detected:
            mon.rereference()
    for name in CUMULATIVE:
        tested = [s[name] for s in scores if np.isfinite(s.get(name, np.nan))]
        assert len(tested) >= 10 and max(tested) < 1.0, name
