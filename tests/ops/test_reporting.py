"""Each figure renders to a PNG of the expected size."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.image import imread

from tasks.reporting import acquisition_map, atom_overlay, drift_timeline, f1_timeline


def _shape(png: bytes) -> tuple[int, ...]:
    return imread(io.BytesIO(png), format="png").shape


def test_figures_are_pngs() -> None:
    rng = np.random.default_rng(0)
    frame = rng.random((48, 48))
    points = rng.random((12, 2)) * 48
    decisions = {
        "frame_start": np.array([0, 16, 32]),
        "frame_end": np.array([15, 31, 47]),
        "action": np.array(["none", "select", "retrain"]),
        "score_mmd": np.array([0.4, 1.3, 2.5]),
    }
    assert _shape(atom_overlay(frame, points, rng.random(12) * 0.2, pixel_size=0.1))[:2] == (500, 500)
    assert _shape(atom_overlay(frame, np.zeros((0, 2))))[:2] == (500, 500)
    assert _shape(drift_timeline(decisions))[:2] == (320, 640)
    assert _shape(drift_timeline({}))[:2] == (320, 640)
    assert _shape(f1_timeline([15, 31, 47], [0.9, 0.7, 0.95], ["v1", "v1", "v2"]))[:2] == (320, 640)
    png = acquisition_map(points, rng.random(12), points[:3], points[3:4], background=frame)
    assert _shape(png)[:2] == (500, 540)
