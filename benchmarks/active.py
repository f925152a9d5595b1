"""Active learning on twin scenes: measurements to find known targets, and decision time per step.

For each scene (a twin sample; its survey frame gives 55 × 55 = 3025 candidate probe
positions) the target set is the top 1% of the scalarized property computed from the
noiseless spectra. Three strategies measure one point per step, spectra with noise:
DKL (survey-PCA + MLP features → GP) with EI, a plain GP on the raw patches with EI, and
random. Reported: measurements until the first target is measured, targets found within
3% of the grid, and the wall time of one decision (fit + choose) at 3025 candidates.
Random's figures are exact expectations (hypergeometric), not a simulation.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/active.py`` → benchmarks/results/active.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from flows.explore import ExploreConfig, build_twin, scalarizer_for
from tasks.acquisition.twin.spectra import SpectrumChannel
from tasks.active import Campaign, GPSurrogate, candidate_grid, extract_patches, make_scorer, standardise

RESULTS = Path(__file__).parent / "results" / "active.json"
SCENES = [
    {"seed": 1, "lattice": "graphene", "property": "dopant"},
    {"seed": 2, "lattice": "graphene", "property": "dopant"},
    {"seed": 3, "lattice": "graphene", "property": "dopant"},
    {"seed": 4, "lattice": "mos2", "property": "dopant"},
    {"seed": 5, "lattice": "graphene", "property": "defect"},
]


def scene_setup(spec: dict) -> tuple[SpectrumChannel, np.ndarray, np.ndarray, np.ndarray, object]:
    """Channel, candidate positions, standardised patches, true property values, scalarizer."""
    cfg = ExploreConfig(seed=spec["seed"], lattice=spec["lattice"], property=spec["property"])
    twin = build_twin(cfg)
    survey = twin.acquire(cfg.frame)
    rowcol = candidate_grid(survey.image.shape, cfg.stride, cfg.margin)
    inputs = standardise(extract_patches(survey.image, rowcol, cfg.patch))
    channel = SpectrumChannel(twin, cfg.frame)
    scalarizer = scalarizer_for(cfg.property, cfg.lattice)
    truth = scalarizer(channel.energy, channel.expected(rowcol))
    return channel, rowcol, inputs, truth, scalarizer


def run_strategy(
    model: str,
    channel: SpectrumChannel,
    rowcol: np.ndarray,
    inputs: np.ndarray,
    scalarizer,
    budget: int,
    seed: int,
) -> dict:
    """One campaign of ``budget`` single-point steps; the order measured and per-step timings."""
    surrogate = GPSurrogate.dkl(inputs, seed=seed) if model == "dkl" else GPSurrogate.plain(inputs)
    campaign = Campaign(surrogate, make_scorer("logei"), n_initial=5, seed=seed)
    decisions, fits = [], []
    while len(campaign.measured) < budget:
        p = campaign.propose(1)
        if p.how != "initial":
            decisions.append(p.decision_seconds)
            fits.append(p.fit_seconds)
        m = channel.measure(rowcol[p.indices])
        campaign.record(p.indices, scalarizer(m.energy, m.counts))
    return {"order": campaign.measured, "decision_s": decisions, "fit_s": fits}


def hits(order: list[int], targets: set[int], budget: int) -> dict:
    """Measurements to the first target (None if never), and targets found within ``budget``."""
    first = next((n + 1 for n, i in enumerate(order) if i in targets), None)
    return {"first_target_at": first, "targets_found_in_budget": len(set(order[:budget]) & targets)}


def decision_timing(inputs: np.ndarray, values: np.ndarray, threads: int, n_points: int = 100) -> dict:
    """Fit + EI choice at all candidates with ``n_points`` measured, on ``threads`` threads."""
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(inputs), n_points, replace=False)
    out = {}
    for model in ("dkl", "gp"):
        s = GPSurrogate.dkl(inputs) if model == "dkl" else GPSurrogate.plain(inputs)
        t0 = time.perf_counter()
        s.fit(idx[: n_points - 10], values[idx[: n_points - 10]])
        first = time.perf_counter() - t0
        steps = []
        for k in range(n_points - 9, n_points + 1):
            c = Campaign(s, make_scorer("logei"))
            c.measured, c.values = list(idx[:k]), list(values[idx[:k]])
            c.n_initial = 0
            t0 = time.perf_counter()
            c.propose(1)
            steps.append(time.perf_counter() - t0)
        out[model] = {
            "first_fit_s": round(first, 3),
            "step_median_s": round(float(np.median(steps)), 3),
            "step_max_s": round(float(np.max(steps)), 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=len(SCENES))
    parser.add_argument("--budget-fraction", type=float, default=0.03)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for spec in SCENES[: args.scenes]:
        channel, rowcol, inputs, truth, scalarizer = scene_setup(spec)
        n = len(rowcol)
        targets = set(np.flatnonzero(truth >= np.quantile(truth, 0.99)).tolist())
        k = len(targets)
        budget = int(np.ceil(args.budget_fraction * n))
        row = {**spec, "n_candidates": n, "n_targets": k, "budget": budget}
        # Random without replacement: E[first hit] = (N + 1) / (K + 1); E[found in B] = B K / N.
        row["random"] = {"first_target_at": (n + 1) / (k + 1), "targets_found_in_budget": budget * k / n}
        for model in ("dkl", "gp"):
            t0 = time.perf_counter()
            run = run_strategy(model, channel, rowcol, inputs, scalarizer, budget, seed=spec["seed"])
            d = np.asarray(run["decision_s"])
            row[model] = {
                **hits(run["order"], targets, budget),
                "decision_median_s": round(float(np.median(d)), 3),
                "decision_p90_s": round(float(np.quantile(d, 0.9)), 3),
                "decision_max_s": round(float(d.max()), 3),
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        rows.append(row)
        print(json.dumps(row), flush=True)

    def summary(model: str) -> dict:
        firsts = [r[model]["first_target_at"] for r in rows]
        found = [r[model]["targets_found_in_budget"] for r in rows]
        return {
            "first_target_at_median": float(np.median([f if f is not None else np.inf for f in firsts])),
            "scenes_with_target_in_budget": sum(
                f is not None and f <= r["budget"] for f, r in zip(firsts, rows, strict=True)
            ),
            "targets_found_in_budget_mean": float(np.mean(found)),
        }

    summ = {m: summary(m) for m in ("dkl", "gp", "random")}
    rnd = summ["random"]["first_target_at_median"]
    for m in ("dkl", "gp"):
        summ[m]["fewer_than_random_x"] = round(rnd / summ[m]["first_target_at_median"], 2)
    channel, rowcol, inputs, truth, _ = scene_setup(SCENES[0])
    timing = {f"{t}_threads": decision_timing(inputs, truth, t) for t in (1, 2)}
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus (shared), {platform.python_version()}, torch {torch.__version__}",
        "load_average": os.getloadavg(),
        "settings": {
            "budget_fraction": args.budget_fraction,
            "acquisition": "ei",
            "n_initial": 5,
            "batch": 1,
            "threads": args.threads,
        },
        "goals": {"target_within_grid_fraction": 0.03, "fewer_than_random_x": 3.0, "decision_s": 1.0},
        "scenes": rows,
        "summary": summ,
        "decision_timing_100_points_3025_candidates": timing,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({"summary": summ, "timing": timing}, indent=2))


if __name__ == "__main__":
    main()
