"""Each specialist regime's decoder threshold, chosen on validation frames of its own conditions.

The model's heatmap threshold is chosen on frames from the standard training ranges
(``evaluation.calibrate_threshold``). Under low dose or strong defocus the members' heatmaps are
weaker, and on held-out twin frames the best threshold there is lower (0.1 against the shipped
0.2: F1 0.854 against 0.785 at 4·10⁴ e/Å², 0.611 against 0.552 at 130 Å;
``benchmarks/threshold_heldout.py``). So when the specialists are made, each non-standard
regime's members (the subset the edge selects for it) get the threshold that maximises their F1
on twin frames drawn from that regime's own training ranges (``Regime.ranges``), with seeds of
their own (never the frames trained on, never a benchmark stream); see ``choose_threshold``. It is stored with the
regime's statistics in the manifest (``tasks.drift.regimes.RegimeStatistics.threshold``) and
applied when the edge selects the regime. The standard regime keeps the model's threshold.

Run on a registered or shipped version (rewrites the regime statistics in its manifest's
lineage, adding the thresholds and how they were chosen; the weights are not touched)::

    PYTHONPATH=. .venv/bin/python -m tasks.training.regime_thresholds \
        storage/default_models/v0005-4ffada9c/manifest.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scopeflow.errors import InputError
from tasks.drift.regimes import read_statistics, statistics_document
from tasks.inference.ensemble import Ensemble
from tasks.inference.metrics import evaluate

from .conditions import Regime
from .evaluation import TestFrame, threshold_frames

# The search grid: the model's own calibration searches 0.2–0.7 on standard frames; a drifted
# regime's heatmaps are weaker, so the grid goes down to 0.05 (below it every noise bump passes).
GRID = tuple(round(float(t), 2) for t in np.arange(0.05, 0.71, 0.05))
FRAMES = 32  # validation frames per regime (160² px): twice the model's calibration, a regime is narrower
SEED = 30_000  # added to the specialisation's seed: apart from training (0…), calibration (10 000), statistics (20 000)


def choose_threshold(
    ensemble: Ensemble, frames: Sequence[TestFrame], grid: Sequence[float] = GRID, *, seed: int = 0
) -> tuple[float, dict[float, float], float]:
    """The threshold of ``grid`` for ``ensemble`` on ``frames``, its F1 at every threshold, and the
    bootstrap standard error of the chosen threshold's F1 gap to the best.

    Only frames with a crystal count: a frame without one is emptied by the check (``verify``)
    whatever the threshold, while its raw noise bumps would push the choice up (low dose: 0.15 with
    them, 0.1 without). F1 is pooled over the frames, raw decoding (as ``calibrate_threshold``).
    Where the curve is flat near its best (strong defocus: 0.59 from 0.05 to 0.15), the argmax is
    noise: the highest threshold whose F1 is within one standard error of the best is taken (the
    one-standard-error rule), the error that of the F1 difference between the two thresholds over
    1000 bootstrap resamples of the frames (paired: the same frames for both).
    """
    frames = [f for f in frames if len(f.truth)]
    if not frames:
        raise InputError("no validation frame with a crystal to choose a threshold on")
    maps = [ensemble.maps(f.image, f.pixel_size) for f in frames]
    counts = np.zeros((len(grid), len(frames), 3))  # true positives, false positives, false negatives
    for i, t in enumerate(grid):
        for j, (m, f) in enumerate(zip(maps, frames, strict=True)):
            s = evaluate([ensemble.decode(m, float(t))[0].rowcol], [f.truth], f.pixel_size)
            counts[i, j] = s.true_positives, s.false_positives, s.false_negatives

    def f1(c: np.ndarray) -> np.ndarray:  # (..., 3) pooled counts
        return 2 * c[..., 0] / np.maximum(2 * c[..., 0] + c[..., 1] + c[..., 2], 1)

    pooled = f1(counts.sum(axis=1))
    best = int(np.argmax(pooled))
    picks = np.random.default_rng(seed).integers(len(frames), size=(1000, len(frames)))
    boot = f1(counts[:, picks].sum(axis=2))  # (thresholds, resamples)
    # Paired: the frames differ far more from each other than the thresholds do on one frame.
    gap_error = (boot - boot[best]).std(axis=1)
    chosen = max(i for i in range(len(grid)) if pooled[i] >= pooled[best] - gap_error[i])
    error = float(gap_error[chosen])
    return (
        round(float(grid[chosen]), 2),
        {round(float(t), 2): float(v) for t, v in zip(grid, pooled, strict=True)},
        error,
    )


def regime_thresholds(
    ensemble: Ensemble,
    layout: Sequence[Regime],
    *,
    seed: int = SEED,
    frames: int = FRAMES,
    side: int = 160,
) -> dict[str, Any]:
    """Each non-standard regime's threshold for its members of ``ensemble`` (``layout[k]`` is
    member k's regime; ``choose_threshold`` on ``frames`` twin frames of ``side``² px drawn from
    the regime's ranges): ``{"regimes": {name: {"threshold", "f1", "f1_gap_standard_error",
    "f1_at_model_threshold", "crystal_frames"}}, ...}`` with how they were chosen."""
    if len(layout) != ensemble.members:
        raise InputError(f"{len(layout)} regimes for {ensemble.members} members")
    out: dict[str, dict[str, float]] = {}
    for j, regime in enumerate(dict.fromkeys(layout)):
        if regime.is_standard:
            continue
        members = [k for k, r in enumerate(layout) if r.name == regime.name]
        validation = threshold_frames(seed + j, frames, side, regime.ranges)
        if not any(len(f.truth) for f in validation):
            continue  # nothing to choose on (a tiny draw): the regime keeps the model's threshold
        threshold, curve, error = choose_threshold(ensemble.select(members), validation, seed=seed + j)
        out[regime.name] = {
            "threshold": threshold,
            "f1": curve[threshold],
            "f1_gap_standard_error": error,
            "f1_at_model_threshold": curve.get(round(float(ensemble.config.threshold), 2), float("nan")),
            "crystal_frames": sum(len(f.truth) > 0 for f in validation),
        }
    return {
        "source": "twin frames drawn from each regime's training ranges (tasks.training.regime_thresholds)",
        "decoding": "the regime's members, raw decoding, frames with a crystal, one-standard-error rule",
        "frames_per_regime": frames,
        "side_px": side,
        "seed": seed,
        "grid": list(GRID),
        "regimes": out,
    }


def with_thresholds(document: dict[str, Any], chosen: dict[str, Any]) -> dict[str, Any]:
    """A regime statistics document with the thresholds of ``chosen`` (``regime_thresholds``)
    stored in its regimes, and ``chosen`` as its ``threshold_calibration``."""
    stats = read_statistics(document)
    if not stats:
        raise InputError("no regime statistics of the current schema to add thresholds to")
    updated = {
        name: replace(r, threshold=chosen["regimes"].get(name, {}).get("threshold"))
        for name, r in stats.items()
    }
    return statistics_document(updated, chosen)


def main(argv: Sequence[str] | None = None) -> int:
    """Add regime thresholds to the manifest at ``argv[0]`` (its weights beside it)."""
    from storage.models import ModelRegistry
    from tasks.inference.registry import load_ensemble

    ap = argparse.ArgumentParser(prog="python -m tasks.training.regime_thresholds", description=__doc__)
    ap.add_argument("manifest", type=Path, help="a version's manifest.json (weights beside it)")
    ap.add_argument("--frames", type=int, default=FRAMES)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        manifest = json.loads(args.manifest.read_text())
        lineage = manifest["lineage"]
        layout = [Regime.from_dict(r) for r in lineage["regimes"]]
        document = lineage["regime_statistics"]
        seed = int(lineage.get("specialise_config", {}).get("seed", 0)) + SEED
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        print(f"error: {args.manifest}: not a specialist ensemble's manifest ({exc})", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    version_dir = args.manifest.resolve().parent
    registry = ModelRegistry(version_dir.parent / "no-registry", fallback=version_dir.parent)
    ensemble = load_ensemble(manifest["version"], registry, device=torch.device("cpu"))
    chosen = regime_thresholds(ensemble, layout, seed=seed, frames=args.frames)
    lineage["regime_statistics"] = with_thresholds(document, chosen)
    args.manifest.write_text(json.dumps(manifest, indent=1))  # as the registry writes it
    print(json.dumps(chosen["regimes"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
