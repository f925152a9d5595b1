"""The heatmap threshold production's F1 peaks at, on held-out twin frames at the drifted conditions.

Production decodes at the threshold ``calibrate_threshold`` chose on frames drawn from the
standard training ranges, over a grid 0.2–0.7: 0.2, the grid's lowest value. Here F1 is taken
over 0.05–0.7 on twin frames the stream never shows (own seeds and regions, 128², 0.12 Å/px):
``calibrate_threshold``'s draw (another seed), and 8 frames at each of drift.py's drifted
conditions (dose 4·10⁴ e/Å², defocus 130 Å, MoS2) and at the reference. A threshold for a
drifted regime read here is derived from the twin, not from the benchmark stream it is scored on.
``selected_regime``: the members the held-out frames' vote selects (as the edge does, against the
statistics stored with the model), checked, at the model's threshold and at the regime's stored
one (``tasks.training.regime_thresholds``, chosen on other frames of the regime's training ranges).
Run: ``PYTHONPATH=. .venv/bin/python benchmarks/threshold_heldout.py``.
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch
from _common import write_result

from storage.models import ModelRegistry
from tasks.drift.regimes import read_statistics, regime_vote
from tasks.drift.spectrum import image_stats
from tasks.inference.ensemble import Ensemble
from tasks.inference.metrics import evaluate
from tasks.inference.registry import load_ensemble
from tasks.training.evaluation import TestFrame, condition_frames, threshold_frames

THRESHOLDS = [round(float(t), 2) for t in np.arange(0.05, 0.71, 0.05)]
CONDITIONS = {
    "dose 4e4": {"dose": 4e4},
    "defocus 130": {"defocus": 130.0},
    "mos2": {"lattice": "mos2"},
    "reference": {},
}


def checked_f1(ensemble: Ensemble, frames: list[TestFrame]) -> float:
    """F1 of ``ensemble``'s checked columns (as the edge decodes) on frames of one pixel size."""
    p = frames[0].pixel_size
    found = ensemble.locate([f.image for f in frames], p)
    return round(evaluate([a.rowcol for a in found], [f.truth for f in frames], p).f1, 4)


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:  # empty registry: the shipped production
        registry = ModelRegistry(tmp)
        production = load_ensemble("production", registry)
        stats = read_statistics(registry.regime_statistics(production.version))

    def curve(frames: list[TestFrame]) -> dict[float, float]:
        maps = [production.maps(f.image, f.pixel_size) for f in frames]
        out = {}
        for t in THRESHOLDS:
            found = [production.decode(m, t)[0].rowcol for m in maps]
            out[t] = round(evaluate(found, [f.truth for f in frames], [f.pixel_size for f in frames]).f1, 4)
        return out

    curves = {"standard ranges": curve(threshold_frames(31337, 16))}  # as calibrate_threshold, another seed
    selected = {}
    for name, change in CONDITIONS.items():
        held_out = condition_frames(name, {"pixel_size": 0.12, **change}, n=8, seed=4242, shape=(128, 128))
        curves[name] = curve(held_out)
        # What the edge would decode these frames with: the regime they vote for (against the
        # statistics stored with the model), its members, at its stored threshold.
        vote = regime_vote([image_stats(f.image, f.pixel_size) for f in held_out], stats)
        members = [k for k, r in enumerate(production.config.regimes) if r == vote.regime]
        own = stats[vote.regime].threshold

        selected[name] = {
            "regime": vote.regime,
            "members": members,
            "regime_threshold": own,
            "f1_members_at_model_threshold": checked_f1(production.select(members), held_out),
            "f1_members_at_regime_threshold": checked_f1(production.select(members, threshold=own), held_out),
        }
    best = {k: max(v, key=lambda t, v=v: v[t]) for k, v in curves.items()}
    write_result(
        "threshold_heldout",
        {
            "model": production.version,
            "shipped_threshold": production.config.threshold,
            "f1_by_threshold": {k: {str(t): f for t, f in v.items()} for k, v in curves.items()},
            "best_threshold": best,
            # Checked decoding (as the edge), the members the frames' vote selects.
            "selected_regime": selected,
        },
    )


if __name__ == "__main__":
    main()
