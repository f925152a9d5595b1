"""The first reference calibrated in a worker thread decides exactly as one calibrated in place,
and a run killed while that calibration is pending resumes to the same decisions."""

import numpy as np

from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.drift import DriftMonitor, frame_proxies

REFERENCE = 32


def _stream(frames: int = 72):
    """Per-frame inputs of ``DriftMonitor.observe``: a twin stream whose dose steps at 56."""
    twin = DigitalTwin(seed=3, schedule=DriftSchedule.parse("dose=2e6@56"), shape=(96, 96))
    rng = np.random.default_rng(6)
    g = np.stack(np.meshgrid(np.arange(12), np.arange(12), indexing="ij"), -1).reshape(-1, 2) * 10.0 + 5
    proxies = [frame_proxies(g + rng.normal(0, 0.3, g.shape), (128, 128), 0.2) for _ in range(frames)]
    return (
        [twin.acquire(i).image for i in range(frames)],
        rng.normal(size=(frames, 6)),
        rng.normal(0.1, 0.01, frames),
        proxies,
    )


def _feed(mon, stream, start, stop):
    images, emb, unc, proxies = stream
    s = slice(start, stop)
    return mon.observe(start, emb[s], unc[s], proxies[s], images[s], [0.12] * (stop - start))


def test_first_calibration_in_the_background_decides_as_in_place_and_survives_a_kill():
    stream = _stream()
    # Batches of 8 end at the checkpoint: nothing of the batch is left to decide, the
    # calibration runs in a worker thread and the batch's decision has no scores.
    background = DriftMonitor(ert=500, window=8, reference_frames=REFERENCE)
    decisions = [_feed(background, stream, s, s + 8) for s in range(0, REFERENCE, 8)]
    assert background.calibrating and not background.calibrated
    assert not decisions[-1].detected and np.isnan(list(decisions[-1].scores.values())).all()
    # A run killed now stored this state: the resumed monitor calibrates on the stored frames.
    resumed = DriftMonitor(ert=500, window=8, reference_frames=REFERENCE)
    resumed.restore(*background.state())
    # Batches of 12 cross the checkpoint inside a batch: calibrated in place, the rest decided.
    in_place = DriftMonitor(ert=500, window=8, reference_frames=REFERENCE)
    _feed(in_place, stream, 0, 12), _feed(in_place, stream, 12, 24)
    crossing = _feed(in_place, stream, 24, 36)
    assert not in_place.calibrating and in_place.calibrated_on == REFERENCE
    assert np.isfinite(list(crossing.scores.values())).all()  # frames 32-35 were decided
    background.settle()
    for other in (in_place, resumed):
        assert other.calibrated_on == background.calibrated_on == REFERENCE
        assert np.array_equal(
            other.reference.calibration.threshold, background.reference.calibration.threshold
        )
    # The same decisions after it: the dose step at 56 is caught at the same frame by all three.
    first = {}
    for name, mon, starts in (
        ("background", background, range(REFERENCE, 72, 8)),
        ("resumed", resumed, range(REFERENCE, 72, 8)),
        ("in place", in_place, range(36, 72, 8)),
    ):
        for s in starts:
            d = _feed(mon, stream, s, min(s + 8, 72))
            if d.detected:
                first[name] = d.first_alarm
                break
    assert len(set(first.values())) == 1 and 56 <= first["background"] < 64, first
