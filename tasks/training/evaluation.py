"""Evaluation of atom finders on twin scenarios and the abTEM frames, beside the classical baseline.

Scenarios are twin frames under one set of conditions each (the twin's defaults changed
by a few keys); every frame comes from its own sample region (its own crystal rotation
and defects). The abTEM frames (multislice simulations, never trained on) are read from
``$SCOPEFLOW_ABTEM_DIR`` or ``../shared/data/abtem-graphene``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.acquisition.twin import DigitalTwin, DriftSchedule, get_lattice
from tasks.inference.baseline import ClassicalFinder
from tasks.inference.ensemble import Ensemble
from tasks.inference.metrics import Scores, evaluate

from .conditions import ConditionRanges, sample_conditions

SCENARIOS: dict[str, dict[str, Any]] = {
    "in_distribution": {},
    "mos2": {"lattice": "mos2"},
    "perovskite": {"lattice": "perovskite"},
    "low_dose": {"dose": 3e5},
    "defocus": {"defocus": 60.0},
    "contamination": {"contamination": 0.5},
    "scan_distortion": {"jitter": 0.5},
    "pixel_0.06": {"pixel_size": 0.06},
    "pixel_0.25": {"pixel_size": 0.25},
}


@dataclass(frozen=True)
class TestFrame:
    """An image with its truth: (n, 2) px, pixel size Å/px, the lattice's min separation Å."""

    name: str
    image: np.ndarray
    pixel_size: float
    truth: np.ndarray
    min_separation: float


def scenario_frames(
    name: str, n: int = 4, seed: int = 1234, shape: tuple[int, int] = (256, 256)
) -> list[TestFrame]:
    """``n`` twin frames of scenario ``name`` (see ``SCENARIOS``)."""
    return condition_frames(name, SCENARIOS[name], n, seed, shape)


def condition_frames(
    name: str, changes: dict[str, Any], n: int = 4, seed: int = 1234, shape: tuple[int, int] = (256, 256)
) -> list[TestFrame]:
    """``n`` twin frames under the twin's defaults changed by ``changes``, each its own region."""
    frames = []
    for i in range(n):
        base = {**changes, "region": 1000 + i}
        frame = DigitalTwin(seed, DriftSchedule(base=base), shape).acquire(i)
        lattice = get_lattice(frame.conditions["lattice"])
        frames.append(
            TestFrame(
                f"{name}/{i}", frame.image, frame.pixel_size, frame.truth.rowcol, lattice.min_separation
            )
        )
    return frames


def abtem_dir() -> Path:
    """Where the abTEM evaluation frames are."""
    env = os.environ.get("SCOPEFLOW_ABTEM_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data" / "abtem-graphene"


def abtem_frames(directory: Path | None = None) -> list[TestFrame]:
    """The abTEM graphene frames (empty list when the folder is absent)."""
    directory = directory or abtem_dir()
    index = directory / "index.json"
    if not index.exists():
        return []
    meta = json.loads(index.read_text())
    truth = np.load(directory / meta["truth"]).astype(np.float32)
    p = float(meta["pixel_size_A"])
    sep = get_lattice("graphene").min_separation
    return [
        TestFrame(Path(f["file"]).stem, np.load(directory / f["file"]).astype(np.float32), p, truth, sep)
        for f in meta["frames"]
    ]


def score_ensemble(ensemble: Ensemble, frames: list[TestFrame]) -> Scores:
    """Scores of the ensemble over ``frames``."""
    found = [ensemble.locate(f.image, f.pixel_size)[0].rowcol for f in frames]
    return evaluate(found, [f.truth for f in frames], [f.pixel_size for f in frames])


def score_baseline(frames: list[TestFrame], finder: ClassicalFinder = ClassicalFinder()) -> Scores:
    """Scores of the classical finder (told each lattice's minimum separation) over ``frames``."""
    found = [finder.locate(f.image, f.pixel_size, f.min_separation).rowcol for f in frames]
    return evaluate(found, [f.truth for f in frames], [f.pixel_size for f in frames])


def report(
    ensemble: Ensemble, scenarios: list[str] | None = None, n: int = 4, abtem: bool = True
) -> dict[str, Any]:
    """F1 and median error of the ensemble and the baseline per scenario and per abTEM frame."""
    out: dict[str, Any] = {}
    for name in scenarios or list(SCENARIOS):
        frames = scenario_frames(name, n)
        out[name] = {
            "ensemble": score_ensemble(ensemble, frames).as_dict(),
            "baseline": score_baseline(frames).as_dict(),
        }
    if abtem:
        for f in abtem_frames():
            out[f"abtem/{f.name}"] = {
                "ensemble": score_ensemble(ensemble, [f]).as_dict(),
                "baseline": score_baseline([f]).as_dict(),
            }
    return out


def threshold_frames(
    seed: int, n: int = 16, side: int = 160, ranges: ConditionRanges | None = None
) -> list[TestFrame]:
    """``n`` twin frames (``side``² px) drawn from ``ranges`` (default the standard training
    ranges) like the training data, each its own draw: the validation frames a threshold is
    chosen on."""
    ranges = ranges or ConditionRanges()
    frames = []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 0xCA1])
        conditions = sample_conditions(rng, ranges)
        frame = DigitalTwin(
            int(rng.integers(2**31 - 1)), DriftSchedule(base=conditions), (side, side)
        ).acquire(1)
        frames.append(TestFrame(str(i), frame.image, frame.pixel_size, frame.truth.rowcol, 0.0))
    return frames


def calibrate_threshold(ensemble: Ensemble, seed: int, n: int = 16, side: int = 160) -> tuple[float, float]:
    """The heatmap threshold maximising F1 on ``n`` held-out frames drawn like the training data."""
    frames = threshold_frames(seed, n, side)
    maps = [ensemble.maps(f.image, f.pixel_size) for f in frames]
    best = (ensemble.config.threshold, -1.0)
    for t in np.arange(0.2, 0.71, 0.05):
        found = [ensemble.decode(m, float(t))[0].rowcol for m in maps]
        f1 = evaluate(found, [f.truth for f in frames], [f.pixel_size for f in frames]).f1
        if f1 > best[1]:
            best = (round(float(t), 2), f1)
    return best
