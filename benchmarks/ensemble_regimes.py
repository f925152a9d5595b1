"""Specialist ensemble against generalists: F1 per imaging-condition regime, per member and per pair.

For the generalist ensemble (v0002) and the specialist one (v0004: members 0,1 reference,
2,3 low-dose, 4,5 blur) on twin frames of a few conditions (``condition_frames``: the twin's
defaults changed by one key, each frame its own region, fixed seed): F1 of the full
ensemble, of each member alone, and of each regime's pair (``Ensemble.select``). Also the
in-distribution F1 as ``benchmarks/inference.py`` measures it (goal ≥ 0.98) and frames/s of
the fused 6-member against the 5-member pass (256² frames at 0.12 Å/px, full pipeline and
network alone, best of ``--repeats``, interleaved so other load hits both alike).
Run: ``.venv/bin/python benchmarks/ensemble_regimes.py [--frames 12] [--old v0002-…] [--new default]``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
import torch
from _common import write_result

from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.inference.ensemble import BATCH, Ensemble
from tasks.inference.metrics import evaluate
from tasks.inference.registry import load_ensemble
from tasks.training.evaluation import TestFrame, condition_frames, scenario_frames, score_ensemble

CASES: dict[str, dict[str, Any]] = {
    "reference": {},
    "dose_4e4": {"dose": 4e4},
    "dose_1e5": {"dose": 1e5},
    "defocus_130": {"defocus": 130.0},
    "source_size_0.9": {"source_size": 0.9},
    "lattice_mos2": {"lattice": "mos2"},
}
# Targets of the specialist ensemble (the brief that asked for it).
REFERENCE_TOLERANCE = 0.005  # full-ensemble reference F1 within this of the generalists'
LOW_DOSE_PAIR_AT_4E4 = 0.85


def _f1(ensemble: Ensemble, frames: list[TestFrame]) -> float:
    return round(score_ensemble(ensemble, frames).f1, 4)


def regime_pairs(ensemble: Ensemble) -> dict[str, list[int]]:
    """Member indices of each regime named in the config (empty for generalists)."""
    pairs: dict[str, list[int]] = {}
    for k, name in enumerate(ensemble.config.regimes):
        pairs.setdefault(name, []).append(k)
    return pairs


def per_case(ensemble: Ensemble, cases: dict[str, list[TestFrame]]) -> dict[str, Any]:
    """F1 of the ensemble, each member and each regime's members, per case."""
    members = [ensemble.member(k) for k in range(ensemble.members)]
    subsets = {name: ensemble.select(keep) for name, keep in regime_pairs(ensemble).items()}
    return {
        case: {
            "ensemble": _f1(ensemble, frames),
            "members": [_f1(m, frames) for m in members],
            "pairs": {name: _f1(sub, frames) for name, sub in subsets.items()},
        }
        for case, frames in cases.items()
    }


def in_distribution(ensemble: Ensemble, frames: list[np.ndarray], truth: list[np.ndarray], p: float) -> dict:
    """``benchmarks/inference.py``'s two in-distribution figures: its timed frames and the scenario."""
    found = [a.rowcol for a in ensemble.locate(frames, p)]
    return {
        "timed_frames_f1": round(evaluate(found, truth, p).f1, 4),
        "scenario_in_distribution_f1": _f1(ensemble, scenario_frames("in_distribution")),
    }


@torch.inference_mode()
def speed(models: dict[str, Ensemble], frames: list[np.ndarray], p: float, repeats: int) -> dict[str, Any]:
    """Frames/s of the full pipeline and ms/frame of the network alone, best of ``repeats``."""
    for ens in models.values():
        ens.locate(frames[:BATCH], p)  # warm-up: oneDNN builds its kernels per shape
    wall: dict[str, list[float]] = {k: [] for k in models}
    net: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(repeats):
        for key, ens in models.items():
            t = time.perf_counter()
            ens.locate(frames, p)
            wall[key].append(time.perf_counter() - t)
            x, _ = ens._prepare(np.stack(frames[:BATCH]), p)
            t = time.perf_counter()
            ens.net.logits(x)
            net[key].append((time.perf_counter() - t) / BATCH)
    return {
        key: {
            "members": models[key].members,
            "frames_per_s": round(len(frames) / min(wall[key]), 2),
            "network_ms_per_frame": round(1e3 * min(net[key]), 2),
        }
        for key in models
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="v0002-178464be", help="the generalist ensemble")
    ap.add_argument("--new", default="default", help="the specialist ensemble (default: newest shipped)")
    ap.add_argument("--frames", type=int, default=12, help="frames per condition case")
    ap.add_argument("--side", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--speed-frames", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()
    cpu = torch.device("cpu")
    models = {"old": load_ensemble(args.old, device=cpu), "new": load_ensemble(args.new, device=cpu)}
    shape = (args.side, args.side)
    cases = {
        name: condition_frames(name, changes, args.frames, args.seed, shape)
        for name, changes in CASES.items()
    }
    # The frames benchmarks/inference.py times (and scores): 256² at 0.12 Å/px.
    twin = DigitalTwin(7, DriftSchedule(base={"region": 11}), (256, 256))
    shots = [twin.acquire(i) for i in range(args.speed_frames)]
    frames, truth, p = [s.image for s in shots], [s.truth.rowcol for s in shots], shots[0].pixel_size

    out: dict[str, Any] = {}
    for ens in models.values():
        out[ens.version] = {
            "members": ens.members,
            "regimes": list(ens.config.regimes),
            "threshold": ens.config.threshold,
            "cases": per_case(ens, cases),
            "in_distribution": in_distribution(ens, frames, truth, p),
        }
    old, new = (out[m.version] for m in models.values())
    ref_gap = new["cases"]["reference"]["ensemble"] - old["cases"]["reference"]["ensemble"]
    pairs = new["cases"]["dose_4e4"]["pairs"]
    blur = new["cases"]["defocus_130"]["pairs"]
    targets = {
        "reference_f1_change": round(ref_gap, 4),
        "reference_within_0.005": ref_gap >= -REFERENCE_TOLERANCE,
        "low_dose_pair_at_4e4": pairs.get("low-dose"),
        "low_dose_pair_at_4e4_met": (pairs.get("low-dose") or 0.0) >= LOW_DOSE_PAIR_AT_4E4,
        "blur_minus_reference_pair_at_defocus_130": (
            round(blur["blur"] - blur["reference"], 4) if {"blur", "reference"} <= set(blur) else None
        ),
        "in_distribution_goal_0.98_kept": new["in_distribution"]["timed_frames_f1"] >= 0.98
        and new["in_distribution"]["scenario_in_distribution_f1"] >= 0.98,
    }
    write_result(
        "ensemble_regimes",
        {
            "threads": args.threads,
            "load_average_at_start": load_at_start,
            "torch": torch.__version__,
            "cases": {"changes": CASES, "frames": args.frames, "shape": list(shape), "seed": args.seed},
            "models": out,
            "targets": targets,
            "speed_256px_0.12A": speed(
                {models[k].version: models[k] for k in ("new", "old")}, frames, p, args.repeats
            ),
        },
    )


if __name__ == "__main__":
    main()
