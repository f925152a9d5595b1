"""Drift detection and adaptation on the standard twin stream (≥ 2000 frames, several drift events).

Measures detection delay (frames), false alarms per 1000 stationary frames, and F1 over time for
a fixed single member, the full ensemble, the adaptive (selected) subset, and after retraining.
Run: ``.venv/bin/python benchmarks/drift.py [--frames 2400] [--side 128]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from _common import write_result

from scopeflow.settings import EdgeSettings
from storage.datasets import open_dataset, read_truth
from storage.datasets.predictions import read_atoms, read_predictions
from storage.models import ModelRegistry
from tasks.acquisition.loop import acquire_run
from tasks.acquisition.twin import PRESETS, DigitalTwin, DriftSchedule
from tasks.drift.edge_loop import Escalation, run_adaptive_edge
from tasks.inference.metrics import evaluate
from tasks.inference.registry import load_ensemble
from tasks.training.retrain import retrain

SEGMENT = 50  # frames per F1 point


def _f1_by_segment(found: list[np.ndarray], truth: list[np.ndarray], p: float) -> list[float]:
    return [
        evaluate(found[i : i + SEGMENT], truth[i : i + SEGMENT], p).f1 for i in range(0, len(found), SEGMENT)
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=2400)
    ap.add_argument("--side", type=int, default=128)
    ap.add_argument("--ert", type=float, default=1000.0)
    # Default: the budget of the device retraining runs on (scopeflow/settings.py).
    ap.add_argument("--retrain-steps", type=int, default=None)
    # Detection and selection only (the adaptive F1 does not depend on the retraining after it).
    ap.add_argument("--no-retrain", action="store_true")
    ap.add_argument("--name", default="drift", help="results/<name>.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="drift-bench-"))
    try:
        twin = DigitalTwin(seed=21, schedule=DriftSchedule.parse("standard"), shape=(args.side, args.side))
        path = work / "stream.zarr"
        acquire_run(twin, str(path), args.frames, batch_size=64)
        changes = sorted({c.start for c in PRESETS["standard"] if c.start < args.frames})
        registry = ModelRegistry(work / "registry")
        escalations: list[Escalation] = []
        t0 = time.perf_counter()
        summary = run_adaptive_edge(
            path,
            registry=registry,
            settings=EdgeSettings(ert=args.ert, batch_size=16),
            escalate=escalations.append,
        )
        adaptive_s = time.perf_counter() - t0
        ds = open_dataset(path)
        p = float(ds["pixel_size"].values[0])
        frames = list(ds["frames"].values)
        truth = [read_truth(ds, i).rowcol for i in range(len(frames))]
        production = load_ensemble("production", registry)
        full = [a.rowcol for a in production.locate(frames, [p] * len(frames))]
        single = [a.rowcol for a in production.member(0).locate(frames, [p] * len(frames))]
        # Each regime's members alone (specialist ensembles): the best of them on a segment,
        # chosen with the truth, is the most that selecting members could win back there.
        regimes = production.config.regimes
        groups = {
            name: [
                a.rowcol
                for a in production.select([k for k, r in enumerate(regimes) if r == name]).locate(
                    frames, [p] * len(frames)
                )
            ]
            for name in dict.fromkeys(regimes)
        }
        preds = read_predictions(path, summary["model_version"])
        adaptive = [read_atoms(preds, i).rowcol for i in range(len(frames))]

        detections = [d for d in summary["detections"] if d is not None]
        delays, matched = [], set()
        for c in changes:
            after = [d for d in detections if c <= d < c + 200]
            if after:
                delays.append(after[0] - c)
                matched.add(after[0])
        false_alarms = [d for d in detections if d not in matched]
        # F1 per drift segment (from a batch after the change to the next one): what the fixed
        # ensemble lost against in-distribution, and how much of it the selected members won back.
        in_dist = evaluate(full[: changes[0]], truth[: changes[0]], p).f1
        bounds = [*changes, args.frames]
        segments = {}
        for c, end in pairwise(bounds):
            sl = slice(c + 16, end)
            f_full = evaluate(full[sl], truth[sl], p).f1
            f_sel = evaluate(adaptive[sl], truth[sl], p).f1
            lost = in_dist - f_full
            by_group = {name: evaluate(found[sl], truth[sl], p).f1 for name, found in groups.items()}
            best = max(by_group.values(), default=f_full)
            segments[f"{c}-{end}"] = {
                "f1_single": evaluate(single[sl], truth[sl], p).f1,
                "f1_full": f_full,
                "f1_selected": f_sel,
                "f1_regime_groups": by_group,
                "f1_lost": lost,
                "recovered_share": (f_sel - f_full) / lost if lost > 0.02 else None,
                "best_group_recovered_share": (best - f_full) / lost if lost > 0.02 else None,
            }
        # Frames spent re-referencing are not watched.
        stationary = args.frames - len(changes) * EdgeSettings().reference_frames
        retrained: dict[str, dict] = {}
        for e in (
            [] if args.no_retrain else escalations
        ):  # every one: a false alarm's retraining is what the gate must refuse
            outcome = retrain(
                path,
                e.frame_start,
                e.frame_end,
                registry=registry,
                members=e.members,
                steps=args.retrain_steps,
            )
            seg_end = min([c for c in changes if c > e.frame_start] + [args.frames])
            model = load_ensemble(outcome.candidate, registry) if outcome.candidate else production
            idx = range(e.frame_start, seg_end)
            found = [a.rowcol for a in model.locate([frames[i] for i in idx], [p] * len(idx))]
            retrained[f"{e.frame_start}-{seg_end}"] = {
                "candidate_f1": evaluate(found, [truth[i] for i in idx], p).f1,
                "in_distribution_f1": in_dist,
                "production_f1": evaluate([full[i] for i in idx], [truth[i] for i in idx], p).f1,
                "promoted": outcome.promoted,
                "reason": outcome.reason,
            }
        write_result(
            args.name,
            {
                "frames": args.frames,
                "frame_side_px": args.side,
                "drift_events_at": changes,
                "ert_frames": args.ert,
                "detection_delays_frames": delays,
                "median_delay_frames": float(np.median(delays)) if delays else None,
                "events_missed": len(changes) - len(delays),
                "false_alarms": len(false_alarms),
                "false_alarms_per_1000_stationary": 1000 * len(false_alarms) / max(stationary, 1),
                "actions": summary["actions"],
                "selections": summary["selections"],
                "adaptive_loop_frames_per_s": args.frames / adaptive_s,
                "f1_segment_frames": SEGMENT,
                "f1_single_member": _f1_by_segment(single, truth, p),
                "f1_full_ensemble": _f1_by_segment(full, truth, p),
                "f1_adaptive": _f1_by_segment(adaptive, truth, p),
                "f1_in_distribution": in_dist,
                "segments": segments,
                "after_retraining": retrained,
                "goals": {"median_delay_frames": 15, "false_alarms_per_1000": 1, "selection_recovery": 0.5},
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
