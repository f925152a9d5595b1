"""The heatmap threshold production's F1 peaks at, on held-out twin frames at the drifted conditions.

Production decodes at the threshold ``calibrate_threshold`` chose on frames drawn from the
standard training ranges, over a grid 0.2–0.7: 0.2, the grid's lowest value. Here F1 is taken
over 0.05–0.7 on twin frames the stream never shows (own seeds and regions, 128², 0.12 Å/px):
``calibrate_threshold``'s draw (another seed), and 8 frames at each of drift.py's drifted
conditions (dose 4·10⁴ e/Å², defocus 130 Å, MoS2) and at the reference. A threshold for a
drifted regime read here is derived from the twin, not from the benchmark stream it is scored on.
Run: ``PYTHONPATH=. .venv/bin/python benchmarks/threshold_heldout.py``.
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch
from _common import write_result

from storage.models import ModelRegistry
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.inference.metrics import evaluate
from tasks.inference.registry import load_ensemble
from tasks.training.conditions import ConditionRanges, sample_conditions
from tasks.training.evaluation import TestFrame, condition_frames

THRESHOLDS = [round(float(t), 2) for t in np.arange(0.05, 0.71, 0.05)]
CONDITIONS = {
    "dose 4e4": {"dose": 4e4},
    "defocus 130": {"defocus": 130.0},
    "mos2": {"lattice": "mos2"},
    "reference": {},
}


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:  # empty registry: the shipped production
        production = load_ensemble("production", ModelRegistry(tmp))

    def curve(frames: list[TestFrame]) -> dict[float, float]:
        maps = [production.maps(f.image, f.pixel_size) for f in frames]
        out = {}
        for t in THRESHOLDS:
            found = [production.decode(m, t)[0].rowcol for m in maps]
            out[t] = round(evaluate(found, [f.truth for f in frames], [f.pixel_size for f in frames]).f1, 4)
        return out

    frames = []
    for i in range(16):  # as calibrate_threshold draws them, another seed
        rng = np.random.default_rng([31337, i, 0xCA1])
        c = sample_conditions(rng, ConditionRanges())
        fr = DigitalTwin(int(rng.integers(2**31 - 1)), DriftSchedule(base=c), (160, 160)).acquire(1)
        frames.append(TestFrame(str(i), fr.image, fr.pixel_size, fr.truth.rowcol, 0.0))
    curves = {"standard ranges": curve(frames)}
    for name, change in CONDITIONS.items():
        held_out = condition_frames(name, {"pixel_size": 0.12, **change}, n=8, seed=4242, shape=(128, 128))
        curves[name] = curve(held_out)
    best = {k: max(v, key=lambda t, v=v: v[t]) for k, v in curves.items()}
    write_result(
        "threshold_heldout",
        {
            "model": production.version,
            "shipped_threshold": production.config.threshold,
            "f1_by_threshold": {k: {str(t): f for t, f in v.items()} for k, v in curves.items()},
            "best_threshold": best,
        },
    )


if __name__ == "__main__":
    main()
