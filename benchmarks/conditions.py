"""How well retraining's condition estimate (``tasks.training.matching.estimate_conditions``)
recovers the conditions of drifted twin frames, where the truth is known.

Each case renders 16 drifted frames (128², 0.12 Å/px, the drift benchmark's stream size) and
16 reference frames at the twin's defaults (5·10⁶ e/Å², in focus, source 0.3 Å) of the same
lattice and region, from a seed the estimator's own renders do not use, and reports the
estimate against the truth: dose ratio, defocus error (Å), source size (Å), contamination.
The cases are the issue's changes (defocus ±40 Å and beyond, dose ×0.3 / ×0.1 and the
standard stream's 4·10⁴, source size +0.3 Å, contamination) on the three lattices; they were
fixed before the estimator was run on them.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/conditions.py`` (a few minutes on 2 cores).
Writes ``benchmarks/results/conditions.json``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from _common import write_result

from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.training.matching import estimate_conditions

CASES: dict[str, dict[str, Any]] = {
    "defocus 40": {"defocus": 40.0},
    "defocus 80": {"defocus": 80.0},
    "defocus 130": {"defocus": 130.0},
    "dose x0.3": {"dose": 1.5e6},
    "dose x0.1": {"dose": 5e5},
    "dose 4e4": {"dose": 4e4},
    "source 0.6": {"source_size": 0.6},
    "contamination 0.25": {"contamination": 0.25},
    "dose 4e4 + defocus 80": {"dose": 4e4, "defocus": 80.0},
}
LATTICES = ("graphene", "mos2", "perovskite")


def frames(conditions: dict[str, Any], n: int, seed: int, start: int = 0) -> list[np.ndarray]:
    twin = DigitalTwin(seed=seed, schedule=DriftSchedule(base=conditions), shape=(128, 128))
    return [twin.acquire(start + i).image for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--seed", type=int, default=31)
    args = parser.parse_args()
    rows: dict[str, Any] = {}
    for lattice in LATTICES:
        base = {"lattice": lattice, "pixel_size": 0.12, "region": 3}
        reference = frames(base, args.frames, args.seed)
        for name, change in CASES.items():
            truth = {"dose": 5e6, "defocus": 0.0, "source_size": 0.3, "contamination": 0.0, **change}
            drifted = frames({**base, **change}, args.frames, args.seed, start=args.frames)
            t0 = time.perf_counter()
            got, how = estimate_conditions(drifted, 0.12, lattice, reference_frames=reference)
            seconds = time.perf_counter() - t0
            row = {
                "truth": truth,
                "estimate": {k: got[k] for k in truth},
                "dose_ratio": got["dose"] / truth["dose"],
                "defocus_error_A": got["defocus"] - truth["defocus"],
                "source_size_error_A": got["source_size"] - truth["source_size"],
                "contamination_error": got["contamination"] - truth["contamination"],
                "how": how,
                "seconds": seconds,
            }
            rows[f"{lattice} / {name}"] = row
            print(
                f"{lattice:9s} {name:24s} dose ×{row['dose_ratio']:.2f}  defocus {got['defocus']:6.1f} "
                f"(true {truth['defocus']:5.1f})  source {got['source_size']:.2f} (true {truth['source_size']:.2f})"
                f"  contamination {got['contamination']:.2f} (true {truth['contamination']:.2f})  {seconds:.1f} s",
                flush=True,
            )
    dose_ok = [abs(r["dose_ratio"] - 1) <= 0.25 for r in rows.values()]
    defocus_ok = [abs(r["defocus_error_A"]) <= 20 for r in rows.values()]
    summary = {
        "dose_within_25pct": f"{sum(dose_ok)} of {len(dose_ok)}",
        "defocus_within_20A": f"{sum(defocus_ok)} of {len(defocus_ok)}",
        "source_within_0.1A": f"{sum(abs(r['source_size_error_A']) <= 0.1 for r in rows.values())} of {len(rows)}",
        "contamination_right": f"{sum(abs(r['contamination_error']) < 0.01 for r in rows.values())} of {len(rows)}",
    }
    print(summary)
    write_result("conditions", {"cases": rows, "summary": summary, "frames": args.frames, "seed": args.seed})


if __name__ == "__main__":
    main()
