"""The most member selection could win back on `drift.py`'s standard stream: subsets chosen by truth.

`drift.py` scores the members the label-free selection chose and each regime's members; this
scores every single member, every pair and a few larger subsets of the production ensemble on
the same stream's drifted stretches (every ``--every``-th frame, after the batch the change
lands in) and reports, per stretch, the subset that truth would choose and the share of the
F1 lost that it wins back (the same share as `drift.py`'s ``recovered_share``). The decoder
threshold chosen by truth too: the full ensemble, each regime's members and each stretch's best
subset over thresholds 0.05-0.4 (``best_recovered_share_with_threshold``); and the members of the
regime the stretch's frames vote for at that regime's stored threshold (what the edge decodes with).
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
from tasks.drift.regimes import read_statistics, regime_vote
from tasks.drift.spectrum import image_stats
from tasks.inference.metrics import evaluate
from tasks.inference.registry import load_ensemble

# drift.py's stream: in distribution before 500, dose 4e4 e/Å² 500-999, defocus 130 Å 1000-1499.
STRETCHES = {"in_distribution": (0, 500), "dose_4e4": (516, 1000), "defocus_130": (1016, 1500)}
THRESHOLDS = [round(0.05 * i, 2) for i in range(1, 9)]  # 0.05-0.4: the heatmap thresholds swept


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
        registry = ModelRegistry(tmp)
        ensemble = load_ensemble("production", registry)
        stats = read_statistics(registry.regime_statistics(ensemble.version))
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

    def by_stretch(atoms: list) -> dict[str, float]:
        out, start = {}, 0
        for name in STRETCHES:
            n = len(shots[name])
            out[name] = evaluate(
                [a.rowcol for a in atoms[start : start + n]], [s.truth.rowcol for s in shots[name]], p
            ).f1
            start += n
        return out

    f1 = {sub: by_stretch(ensemble.atoms_of(outputs, list(sub))) for sub in subsets}
    full = f1[tuple(range(k))]
    drifted = ("dose_4e4", "defocus_130")
    # The decoder threshold chosen by truth as well: the full ensemble, each regime's members and
    # each stretch's best subset at the model's threshold, decoded at every threshold of a grid.
    swept_subsets = dict.fromkeys(
        [tuple(range(k)), *groups.values(), *(max(subsets, key=lambda s, n=n: f1[s][n]) for n in drifted)]
    )
    swept = {
        (sub, t): by_stretch(ensemble.atoms_of(outputs, list(sub), threshold=t))
        for sub in swept_subsets
        for t in THRESHOLDS
    }
    summary = {}
    for name in drifted:
        lost = full["in_distribution"] - full[name]
        best = max(subsets, key=lambda s, n=name: f1[s][n])
        best_sweep = max(swept, key=lambda st, n=name: swept[st][n])
        # The regime the stretch's frames vote for (as the edge chooses), at its stored threshold.
        vote = regime_vote([image_stats(s.image, p) for s in shots[name]], stats)
        own = stats[vote.regime].threshold
        members = groups[vote.regime]
        at_own = by_stretch(ensemble.atoms_of(outputs, list(members), threshold=own))[name]
        summary[name] = {
            "f1_full": full[name],
            "f1_in_distribution": full["in_distribution"],
            "best_subset": list(best),
            "best_subset_regimes": [regimes[i] for i in best],
            "f1_best_subset": f1[best][name],
            "best_recovered_share": (f1[best][name] - full[name]) / lost,
            "best_subset_and_threshold": [list(best_sweep[0]), best_sweep[1]],
            "f1_best_subset_and_threshold": swept[best_sweep][name],
            "best_recovered_share_with_threshold": (swept[best_sweep][name] - full[name]) / lost,
            "voted_regime": vote.regime,
            "voted_regime_threshold": own,
            "f1_voted_regime_at_its_threshold": at_own,
            "recovered_share_voted_regime_at_its_threshold": (at_own - full[name]) / lost,
        }
    write_result(
        "drift_oracle",
        {
            "model_version": ensemble.version,
            "every_nth_frame": args.every,
            "stretches": STRETCHES,
            "subsets": {",".join(map(str, s)): v for s, v in f1.items()},
            "subsets_by_threshold": {f"{','.join(map(str, s))}@{t}": v for (s, t), v in swept.items()},
            "summary": summary,
            "goal_recovered_share": 0.5,
        },
    )


if __name__ == "__main__":
    main()
