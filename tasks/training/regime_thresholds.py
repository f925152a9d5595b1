"""Each specialist regime's decoder threshold, chosen on validation frames of its own conditions.

The model's heatmap threshold is chosen on frames from the standard training ranges
(``evaluation.calibrate_threshold``). Under low dose or strong defocus the members' heatmaps are
weaker, and on held-out twin frames the best threshold there is lower (0.1 against the shipped
0.2: F1 0.854 against 0.785 at 4·10⁴ e/Å², 0.611 against 0.552 at 130 Å;
``benchmarks/threshold_heldout.py``). So when the specialists are made, each non-standard
regime's members (the subset the edge selects for it) get the threshold that maximises their F1
on twin frames drawn from that regime's own training ranges (``Regime.ranges``), with seeds of
their own (never the frames trained on, never a benchmark stream). It is stored with the
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

from .conditions import Regime
from .evaluation import best_threshold, threshold_frames

# The search grid: the model's own calibration searches 0.2–0.7 on standard frames; a drifted
# regime's heatmaps are weaker, so the grid goes down to 0.05 (below it every noise bump passes).
GRID = tuple(round(float(t), 2) for t in np.arange(0.05, 0.71, 0.05))
FRAMES = 32  # validation frames per regime (160² px): twice the model's calibration, a regime is narrower
SEED = 30_000  # added to the specialisation's seed: apart from training (0…), calibration (10 000), statistics (20 000)


def regime_thresholds(
    ensemble: Ensemble,
    layout: Sequence[Regime],
    *,
    seed: int = SEED,
    frames: int = FRAMES,
    side: int = 160,
) -> dict[str, Any]:
    """Each non-standard regime's threshold for its members of ``ensemble`` (``layout[k]`` is
    member k's regime): ``{"regimes": {name: {"threshold", "f1", "f1_at_model_threshold"}}, ...}``
    with how they were chosen (frames, side px, seed, grid)."""
    if len(layout) != ensemble.members:
        raise InputError(f"{len(layout)} regimes for {ensemble.members} members")
    out: dict[str, dict[str, float]] = {}
    for j, regime in enumerate(dict.fromkeys(layout)):
        if regime.is_standard:
            continue
        members = [k for k, r in enumerate(layout) if r.name == regime.name]
        validation = threshold_frames(seed + j, frames, side, regime.ranges)
        threshold, f1, curve = best_threshold(ensemble.select(members), validation, GRID)
        model = round(float(ensemble.config.threshold), 2)
        out[regime.name] = {
            "threshold": threshold,
            "f1": f1,
            "f1_at_model_threshold": curve.get(model, float("nan")),
        }
    return {
        "source": "twin frames drawn from each regime's training ranges (tasks.training.regime_thresholds)",
        "decoding": "the regime's members, raw decoding (as evaluation.calibrate_threshold)",
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
