"""The most member selection could win back on `drift.py`'s standard stream: subsets chosen by truth.

`drift.py` scores the members the label-free selection chose and each regime's members; this
scores every single member, every pair and a few larger subsets of the production ensemble on
the same stream's drifted stretches (every ``--every``-th frame, after the batch the change
lands in) and reports, per stretch, the subset that truth would choose and the share of the
F1 lost that it wins back (the same share as `drift.py`'s ``recovered_share``).
Run: ``PYTHONPATH=. .venv/bin/python benchmarks/drift_oracle.py [--every 5]``.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile

import torch
from _common import write_result

from storage.models import ModelRegistry
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.inference.metrics import evaluate
from tasks.inference.registry import load_ensemble

# drift.py's stream: in distribution before 500, dose 4e4 e/Å² 500-999, defocus 130 Å 1000-1499.
STRETCHES = {"in_distribution": (0, 500), "dose_4e4": (516, 1000), "defocus_130": (1016, 1500)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    twin = DigitalTwin(seed=21, schedule=DriftSchedule.parse("standard"), shape=(128, 128))
    index = {k: list(range(a, b, args.every)) for k, (a, b) in STRETCHES.items()}
    shots = {k: [twin.acquire(i) for i in idx] for k, idx in index.items()}
    # An empty registry: production is the shipped ensemble, as in drift.py's first stretch.
    with tempfile.TemporaryDirectory() as tmp:
        ensemble = load_ensemble("production", ModelRegistry(tmp))
    p = shots["in_distribution"][0].pixel_size
    frames = [s.image for k in STRETCHES for s in shots[k]]
    outputs = ensemble.outputs(frames, [p] * len(frames))
    k = ensemble.members
    subsets = [tuple(range(k))]
    subsets += [c for m in (1, 2) for c in itertools.combinations(range(k), m)]
    regimes = ensemble.config.regimes
    groups = {name: tuple(i for i, r in enumerate(regimes) if r == name) for name in dict.fromkeys(regimes)}
    # Unions of two regimes' members (the specialists beside the generalists).
    subsets += [a + b for a, b in itertools.combinations(groups.values(), 2) if len(a + b) > 2]
    f1: dict[tuple[int, ...], dict[str, float]] = {}
    for sub in subsets:
        atoms = ensemble.atoms_of(outputs, list(sub))
        start = 0
        f1[sub] = {}
        for name in STRETCHES:
            n = len(shots[name])
            f1[sub][name] = evaluate(
                [a.rowcol for a in atoms[start : start + n]], [s.truth.rowcol for s in shots[name]], p
            ).f1
            start += n
    full = f1[tuple(range(k))]
    summary = {}
    for name in ("dose_4e4", "defocus_130"):
        lost = full["in_distribution"] - full[name]
        best = max(subsets, key=lambda s: f1[s][name])
        summary[name] = {
            "f1_full": full[name],
            "f1_in_distribution": full["in_distribution"],
            "best_subset": list(best),
            "best_subset_regimes": [regimes[i] for i in best],
            "f1_best_subset": f1[best][name],
            "best_recovered_share": (f1[best][name] - full[name]) / lost,
        }
    write_result(
        "drift_oracle",
        {
            "model_version": ensemble.version,
            "every_nth_frame": args.every,
            "stretches": STRETCHES,
            "subsets": {",".join(map(str, s)): v for s, v in f1.items()},
            "summary": summary,
            "goal_recovered_share": 0.5,
        },
    )


if __name__ == "__main__":
    main()
