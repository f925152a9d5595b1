"""Where the invariance top-1 is lost: one archive queried by copies transformed step by step.

Run: ``PYTHONPATH=. nice -n 5 python benchmarks/similarity_invariance.py [--frames 1080 --queries 300]``.
Updates the ``invariance_steps`` key of ``benchmarks/results/similarity.json``.

The archive is the quality part's (36 regions, the same twins and draws, fewer frames). Each
query frame is copied four ways, each adding one step of ``similarity.transformed_copy``:
re-noised only (30-100 % of its dose); cropped to the copy's size (the central 165² of 256²,
42 % of the area) and re-noised; turned by a multiple of 90° (no resampling) before that crop;
rotated by any angle before it; the full transform
(rotation, mirror, shift, 0.8-1.25× rescale). Top-1 region accuracy per step, for the whole
descriptor and each block alone, with the misses split by what the wrong region shares with the
source (same lattice and defect class: a defocus confusion; same lattice and defocus: a
defect-class confusion).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from similarity import COMBOS, _region_twins, _update, transformed_copy

from tasks.embedding.descriptor import BLOCK_WEIGHTS, describe

BLOCKS = ("radial", "angular", "intensity")


def _stack(described: list[dict[str, np.ndarray]], weights: dict[str, float]) -> np.ndarray:
    parts = []
    for name in BLOCKS:
        x = np.array([d[name] for d in described], np.float64)
        parts.append(weights[name] * x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))
    v = np.concatenate(parts, axis=1)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _renoise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.poisson(np.clip(image, 0, None) * rng.uniform(0.3, 1.0)).astype(np.float32)


def _crop(image: np.ndarray, rng: np.random.Generator, angle: float | None) -> np.ndarray:
    img = image.astype(np.float32)
    if angle is not None:
        img = ndimage.rotate(img, angle, reshape=True, order=3)
    side = int(image.shape[0] / np.sqrt(2)) - 16
    cy, cx = np.array(img.shape) // 2
    return _renoise(img[cy - side // 2 : cy + side // 2, cx - side // 2 : cx + side // 2], rng)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=1080)
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    per = int(np.ceil(args.frames / len(COMBOS)))
    query_ids = set(rng.choice(args.frames, args.queries, replace=False).tolist())
    described, region, kept, pixel = [], [], {}, []
    n = 0
    for r, _combo, twin in _region_twins(per, rng):
        for i in range(per):
            frame = twin.acquire(i)
            described.append(describe(frame.image, frame.pixel_size))
            region.append(r)
            pixel.append(frame.pixel_size)
            if n in query_ids:
                kept[n] = frame.image
            n += 1
    region_ = np.array(region)
    ids = sorted(query_ids)
    steps = {
        "renoise": [(_renoise(kept[i], rng), pixel[i]) for i in ids],
        "crop": [(_crop(kept[i], rng, None), pixel[i]) for i in ids],
        # A quarter turn moves pixels without resampling them: what rotation costs apart
        # from interpolation.
        "quarter_turn_crop": [
            (_crop(np.rot90(kept[i], int(rng.integers(1, 4))), rng, None), pixel[i]) for i in ids
        ],
        "rotate_crop": [(_crop(kept[i], rng, rng.uniform(0, 360)), pixel[i]) for i in ids],
        "full": [transformed_copy(kept[i], pixel[i], rng) for i in ids],
    }
    weights = {"all": dict(BLOCK_WEIGHTS)} | {b: {c: float(c == b) for c in BLOCKS} for b in BLOCKS}
    lattice = np.array([c[0] for c in COMBOS])
    defect = np.array([c[1] for c in COMBOS])
    defocus = np.array([c[2] for c in COMBOS])
    truth = region_[ids]
    out: dict[str, Any] = {"archive_frames": n, "queries": len(ids)}
    for step, copies in steps.items():
        queries = [describe(c, p) for c, p in copies]
        out[step] = {}
        for name, w in weights.items():
            top = region_[np.argmax(_stack(queries, w) @ _stack(described, w).T, axis=1)]
            miss = top != truth
            same_lat = lattice[top] == lattice[truth]
            out[step][name] = {
                "top1_region": float(np.mean(~miss)),
                "miss_defocus_only": float(np.mean(miss & same_lat & (defect[top] == defect[truth]))),
                "miss_defect_only": float(np.mean(miss & same_lat & (defocus[top] == defocus[truth]))),
                "miss_lattice": float(np.mean(~same_lat)),
            }
            print(step, name, out[step][name], flush=True)
    _update("invariance_steps", out)


if __name__ == "__main__":
    main()
