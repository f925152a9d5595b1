"""What limits drift retraining: truth F1 after fine-tuning against the budget and its settings.

`benchmarks/drift.py`'s retraining (``tasks.training.finetune.fine_tune``) scored on truth the
twin knows, with the conditions given exactly (the twin's own at the stretch's start, so that
the condition estimate is not what is measured): drift.py's stream (standard schedule, 128²,
0.12 Å/px), the stretch after the 130 Å defocus step (1016–1499), after the dose step to
4·10⁴ e/Å² (516–999) or after the new lattice, MoS2 (2016–2399). Pseudo-labels come from the
stretch's first 24 frames and its trusted pair (blur pair at 130 Å, low-dose pair at 4·10⁴,
reference pair on MoS2), as ``retrain`` takes them; F1 is scored on every ``--score-every``-th
frame after those 24, checked (as the edge reports) and raw (the network's decoding before the
check) at several heatmap thresholds — recall lost in the network or in the decoder.
``twin_val``: twin frames at the same conditions (256², other regions), and ``reference``: at
the twin's defaults, as ``retrain``'s validation (the gate a candidate may lose ≤ 0.01 on).

Variants (comma-separated; parts joined by ``_``): ``sN`` N optimiser steps (default 120),
``lrX`` learning rate (5e-4), ``nN`` N matched twin samples (160), ``rX`` share X of each
batch replaying the member's own regime (default ``finetune.REPLAY_SHARE``), ``noreplay``
(share 0), ``nopseudo``, ``fresh`` (members from a random initialisation instead of
production's weights). 6000 steps: 3 min on one H200, ~4 min on 2 quiet CPU cores.
Run: ``PYTHONPATH=. .venv/bin/python benchmarks/retrain_budget.py --stretch defocus_130
--variants s120,s1500,s1500_n1000 [--seed 21] [--score-every 4] [--name retrain_budget_130]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import numpy as np
import torch
from _common import write_result

from storage.models import ModelRegistry
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.inference.ensemble import Ensemble
from tasks.inference.metrics import evaluate
from tasks.inference.network import FusedUNet
from tasks.inference.registry import load_ensemble
from tasks.training.evaluation import condition_frames, score_ensemble
from tasks.training.finetune import TrainingSet, fine_tune, pseudo_labels

# First frame after the change's batch, end of the stretch, the members selection trusts there.
STRETCHES = {
    "defocus_130": (1016, 1500, (4, 5)),
    "dose_4e4": (516, 1000, (2, 3)),
    # A new lattice no member was specialised for: the reference pair, as selection trusts it.
    "lattice_mos2": (2016, 2400, (0, 1)),
}
THRESHOLDS = (0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
CONDITION_KEYS = ("dose", "defocus", "lattice", "pixel_size", "source_size", "contamination")


def _prf(s: Any) -> list[float]:
    return [round(s.precision, 4), round(s.recall, 4), round(s.f1, 4)]


def scores(model: Ensemble, frames: list[np.ndarray], truth: list[np.ndarray], p: float) -> dict:
    """[precision, recall, F1] checked, and raw at each of ``THRESHOLDS``."""
    model.check = True
    out = {"checked": _prf(evaluate([a.rowcol for a in model.locate(frames, [p] * len(frames))], truth, p))}
    model.check = False
    maps = [model.maps(np.stack(frames[i : i + 32]), p) for i in range(0, len(frames), 32)]
    for t in THRESHOLDS:
        out[f"raw@{t}"] = _prf(evaluate([a.rowcol for m in maps for a in model.decode(m, t)], truth, p))
    model.check = True
    return out


def parse(variant: str) -> tuple[dict, bool, bool]:
    """fine_tune's keywords, whether to use the pseudo-labels, whether to start fresh."""
    kw: dict[str, Any] = {"steps": 120, "lr": 5e-4, "twin_samples": 160}
    use_pseudo, fresh = True, False
    for part in variant.split("_"):
        if part[:1] == "s" and part[1:].isdigit():
            kw["steps"] = int(part[1:])
        elif part.startswith("lr"):
            kw["lr"] = float(part[2:])
        elif part[:1] == "n" and part[1:].isdigit():
            kw["twin_samples"] = int(part[1:])
        elif part == "noreplay":
            kw["replay_share"] = 0.0
        elif part[:1] == "r" and part[1:].replace(".", "", 1).isdigit():
            kw["replay_share"] = float(part[1:])
        elif part == "nopseudo":
            use_pseudo = False
        elif part == "fresh":
            fresh = True
        else:
            raise SystemExit(f"unknown variant part {part!r} in {variant!r}")
    return kw, use_pseudo, fresh


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=21, help="the twin's seed (21: drift.py's stream)")
    ap.add_argument("--stretch", choices=sorted(STRETCHES), default="defocus_130")
    ap.add_argument("--variants", default="s120")
    ap.add_argument("--score-every", type=int, default=4)
    ap.add_argument("--twin-val", type=int, default=4, help="twin validation frames")
    ap.add_argument("--name", default=None, help="results/<name>.json")
    args = ap.parse_args()
    variants = args.variants.split(",")
    for v in variants:
        parse(v)  # refuse a bad variant before minutes of work
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cpu":
        torch.set_num_threads(2)
    a, b, trusted_members = STRETCHES[args.stretch]
    twin = DigitalTwin(seed=args.seed, schedule=DriftSchedule.parse("standard"), shape=(128, 128))
    conditions = {k: twin.conditions(a)[k] for k in CONDITION_KEYS}
    p = float(conditions["pixel_size"])
    train_frames = [twin.acquire(i).image for i in range(a, a + 24)]
    scored = [twin.acquire(i) for i in range(a + 24, b, args.score_every)]
    frames, truth = [f.image for f in scored], [f.truth.rowcol for f in scored]
    with tempfile.TemporaryDirectory() as tmp:  # empty registry: the shipped production
        shipped = load_ensemble("production", ModelRegistry(tmp))
    production = Ensemble(shipped.net, shipped.config, shipped.version, dev)
    pseudo = pseudo_labels(production.select(list(trusted_members)), train_frames, p, patch=64, seed=0)
    empty = TrainingSet(pseudo.images[:0], pseudo.targets[:0])
    # Validation frames and the fine-tune's samples follow the stream's seed, so that a setting
    # chosen on one seed is scored on frames and training draws it was not chosen on.
    twin_val = condition_frames("new", conditions, n=args.twin_val, seed=args.seed * 100 + 77)
    # The reference conditions retrain's gate guards (a candidate may lose ≤ 0.01 there).
    reference = condition_frames("reference", {}, n=args.twin_val, seed=args.seed * 100 + 78)

    def twin_scores(model: Ensemble) -> dict:
        return {
            "twin_val": _prf(score_ensemble(model, twin_val)),
            "reference": _prf(score_ensemble(model, reference)),
        }

    results: dict[str, Any] = {
        "production": {**scores(production, frames, truth, p), **twin_scores(production)}
    }
    print("production", results["production"], flush=True)
    for v in variants:
        kw, use_pseudo, fresh = parse(v)
        start = production
        if fresh:
            torch.manual_seed(1)
            net = FusedUNet(production.members, production.config.widths, production.net.n_classes)
            start = Ensemble(net, production.config, production.version, dev)
        t0 = time.perf_counter()
        candidate, lineage = fine_tune(
            start, pseudo if use_pseudo else empty, conditions, seed=args.seed, log=lambda _: None, **kw
        )
        results[v] = {
            "train_s": round(time.perf_counter() - t0, 1),
            "final_loss": lineage["final_loss"],
            **scores(candidate, frames, truth, p),
            **twin_scores(candidate),
        }
        print(v, results[v], flush=True)
    write_result(
        args.name or f"retrain_budget_{args.stretch}_seed{args.seed}",
        {
            "stream": f"twin seed {args.seed}, standard schedule, 128² frames, 0.12 Å/px",
            "stretch": args.stretch,
            "conditions": conditions,
            "score_frames": len(frames),
            "pseudo_patches": len(pseudo),
            "device": str(dev),
            "scores": "[precision, recall, F1]; checked = as the edge reports, raw@t = decoded at heatmap t",
            "variants": results,
        },
    )


if __name__ == "__main__":
    main()
