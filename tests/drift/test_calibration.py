"""The calibration's own arithmetic: thresholds from sorted simulated statistics equal numpy's."""

from __future__ import annotations

import numpy as np

from tasks.drift.calibration import _FirstExceedance, _Tail, calibrate, sorted_quantile


def test_sorted_quantile_is_numpys_quantile_to_the_bit() -> None:
    rng = np.random.default_rng(4)
    for n in (1, 2, 7, 1000, 192_001):
        x = np.abs(rng.standard_t(3, size=(n, 3)))
        ordered = np.sort(x, axis=0)
        for p in np.concatenate(
            [[0.0, 1e-7, 0.5, 1.0], rng.uniform(0, 1, 50), 10 ** rng.uniform(-7, -0.3, 50)]
        ):
            assert np.array_equal(sorted_quantile(ordered, 1.0 - p), np.quantile(x, 1.0 - p, axis=0))


def test_tail_quantiles_are_numpys_to_the_bit_sorting_only_what_is_asked() -> None:
    rng = np.random.default_rng(5)
    for n in (2, 9, 5000):
        x = np.round(np.abs(rng.standard_t(3, size=(3, n))), 1)  # ties included
        tail = _Tail(x)
        # Upper quantiles first (the top alone), then lower ones, which sort more of it.
        for p in [1e-7, 1e-3, 0.01, 0.2, 0.5, 0.99, 1.0, 0.0]:
            assert np.array_equal(tail.quantile(1.0 - p), np.quantile(x, 1.0 - p, axis=1))
        assert np.array_equal(tail.last(), x.max(axis=1))


def test_run_lengths_from_records_equal_scanning_every_frame() -> None:
    """The calibration's run lengths (frames to the first statistic above a threshold, any
    detector) from each stream's running records are those of a scan of every frame."""
    rng = np.random.default_rng(6)
    stats = np.round(np.abs(rng.standard_normal((16, 3, 400))), 2)  # ties between frames
    stats[rng.random(stats.shape) < 0.02] = np.nan
    stats[:, 2] = 0.5  # a detector that never moved
    first = _FirstExceedance(stats)
    for threshold in [np.full(3, 9.0), np.array([2.5, 3.0, 0.4]), np.array([1.0, 2.0, 0.5]), np.zeros(3)]:
        exceed = (stats > threshold[None, :, None]).any(axis=1)  # NaN never exceeds
        scan = np.where(exceed.any(axis=1), exceed.argmax(axis=1) + 1, stats.shape[2])
        assert np.array_equal(first.run_lengths(threshold), scan)


def test_calibration_of_a_stationary_stream_holds_its_ert() -> None:
    """The thresholds keep their promise on fresh stationary streams like the reference."""
    rng = np.random.default_rng(8)
    names = ("a", "b")
    x = rng.standard_normal((200, 2))
    cal = calibrate(x, names, ert=200, window=10, lookback=10, seed=3)
    assert 150 <= cal.simulated_ert <= 260
    runs = []
    for _ in range(40):
        stream = rng.standard_normal((2000, 2))
        for t in range(20, len(stream)):
            if (cal.statistics(stream[t - 20 : t]) > cal.threshold).any():
                runs.append(t - 19)
                break
        else:
            runs.append(len(stream) - 19)
    assert 80 <= np.mean(runs) <= 500
