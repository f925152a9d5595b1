"""Does training on frames without a crystal, and on more vacancies, change what the raw network finds?

Fine-tunes a copy of the production ensemble (never shipped, never saved) on twin samples with
``ConditionRanges.crystal_free_probability`` (default 0.2) and vacancy rates up to 0.15, and
compares the raw decoding (``Ensemble.check = False``) of the copy with the original's on

- 256² frames with no crystal: shot noise (60 counts/px), vacuum (0.2 counts/px), amorphous
  contrast (counted): columns reported;
- the abTEM graphene frames in ../shared/data (evaluation only): vacancies filled, F1;
- twin frames of the three lattices (vacancy rate 0.03): vacancies filled, mean F1.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/crystal_free.py [--samples 1200] [--steps 600]``
(about 12 minutes on 2 idle cores). Writes ``benchmarks/results/crystal_free.json``.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import replace

import numpy as np
import torch
from _common import write_result
from accuracy import abtem_vacancies, no_crystal_makers
from scipy.spatial import cKDTree

from storage.models import ModelRegistry
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.acquisition.twin.scene import VACANCY
from tasks.inference.ensemble import Ensemble
from tasks.inference.metrics import match
from tasks.inference.registry import load_ensemble
from tasks.training.conditions import ConditionRanges, sample_conditions
from tasks.training.data import TrainingSet
from tasks.training.evaluation import abtem_frames, score_ensemble
from tasks.training.synthesis import render_sample
from tasks.training.targets import targets as make_targets
from tasks.training.train import fit

PATCH = 64


def training_set(n: int, ranges: ConditionRanges, model_pixel_size: float, sigma: float) -> TrainingSet:
    """``n`` twin samples drawn from ``ranges`` (seeded by index, as ``make_training_set``)."""
    images = torch.empty((n, 1, PATCH, PATCH))
    targets = torch.empty((n, 5, PATCH, PATCH), dtype=torch.float16)
    for i in range(n):
        rng = np.random.default_rng([7, i, 0x7A1])
        sample = render_sample(
            sample_conditions(rng, ranges), int(rng.integers(2**31 - 1)), PATCH, model_pixel_size
        )
        images[i, 0] = torch.from_numpy(sample.image)
        targets[i] = torch.from_numpy(make_targets((PATCH, PATCH), sample.rowcol, sample.cls, 3, sigma))
    return TrainingSet(images, targets, {})


def raw_findings(ensemble: Ensemble) -> dict[str, object]:
    """What the raw decoding reports on frames without a crystal, abTEM and twin frames."""
    ensemble.check = False
    out: dict[str, object] = {}
    makers = no_crystal_makers(np.random.default_rng(2026))
    kinds = {
        "shot_noise": "shot noise (60 counts/px)",
        "vacuum": "vacuum (0.2 counts/px)",
        "amorphous": "amorphous contrast, counted",
    }
    for name, kind in kinds.items():
        frames = [np.asarray(makers[kind](), np.float32) for _ in range(3)]
        out[f"columns_{name}"] = float(np.mean([len(a) for a in ensemble.locate(frames, 0.1)]))
    frames = abtem_frames()
    if frames:
        filled = total = 0
        for f in frames:
            atoms = ensemble.locate(f.image, f.pixel_size)[0]
            vacancies = abtem_vacancies(f.truth)
            filled += int((cKDTree(atoms.rowcol).query(vacancies)[0] < 0.5 / f.pixel_size).sum())
            total += len(vacancies)
        out["abtem_vacancies_filled"] = [filled, total]
        out["abtem_f1"] = score_ensemble(ensemble, frames).f1
    filled = total = 0
    f1 = []
    for lattice in ("graphene", "mos2", "perovskite"):
        for seed in range(3):
            base = {"vacancy_rate": 0.03, "substitution_rate": 0.02, "lattice": lattice}
            twin = DigitalTwin(100 + seed, DriftSchedule(base=base), (256, 256))
            frame = twin.acquire(3)
            p = frame.pixel_size
            scene, (origin, _) = twin.scene(3), twin.window(3)
            vac = (scene.xy[scene.kind == VACANCY][:, ::-1] - np.array(origin[::-1])) / p
            vac = vac[(vac.min(1) > 10) & (vac.max(1) < 246)]
            atoms = ensemble.locate(frame.image, p)[0]
            if len(vac):
                filled += int((cKDTree(atoms.rowcol).query(vac)[0] < 0.5 / p).sum())
                total += len(vac)
            pairs, _ = match(atoms.rowcol, frame.truth.rowcol, 0.5 / p)
            f1.append(2 * len(pairs) / (len(atoms) + len(frame.truth.rowcol)))
    out["twin_vacancies_filled"] = [filled, total]
    out["twin_f1_mean"] = float(np.mean(f1))
    ensemble.check = True
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1200)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--crystal-free", type=float, default=0.2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    base = load_ensemble("production", ModelRegistry("/nonexistent-registry"), device=torch.device("cpu"))
    ranges = replace(ConditionRanges(), vacancy_rate=(0.0, 0.15), crystal_free_probability=args.crystal_free)
    start = time.perf_counter()
    data = training_set(args.samples, ranges, base.config.model_pixel_size, base.config.sigma)
    render_s = time.perf_counter() - start
    tuned = copy.deepcopy(base)
    gens = [torch.Generator().manual_seed(100 + k) for k in range(base.members)]
    start = time.perf_counter()
    fit(tuned.net, data, args.steps, 16, 5e-4, gens, torch.device("cpu"), print, "fine-tune")
    train_s = time.perf_counter() - start
    tuned.net = tuned.net.to(memory_format=torch.contiguous_format)
    write_result(
        "crystal_free",
        {
            "model": base.version,
            "samples": args.samples,
            "steps": args.steps,
            "ranges": ranges.as_dict(),
            "render_seconds": render_s,
            "train_seconds": train_s,
            "production_raw": raw_findings(base),
            "fine_tuned_raw": raw_findings(tuned),
        },
    )


if __name__ == "__main__":
    main()
