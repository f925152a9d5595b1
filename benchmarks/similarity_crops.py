"""The first stage with crops: does describing each archive frame by a grid of crops as well
bring a copy's source frame (and its region) nearer the top of the index?

Run: ``PYTHONPATH=. nice -n 5 python benchmarks/similarity_crops.py [--queries 300]``: exactly
``similarity.py``'s 10 000-frame archive (seed 7, twin seed 2026) and its first ``--queries``
copies. The crops' descriptors come from ``similarity_exhaustive.py --crops --prepare-only``'s
cache (built here if missing, ~11 min on the shared machine). Exact search; a frame's score is
its own descriptor's cosine (``frame``) or the best of its own and its crops' (``crops``).
Updates ``first_stage_crops`` in ``benchmarks/results/similarity.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import similarity as bench
import similarity_exhaustive as ex

from tasks.embedding import embed_frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--procs", type=int, default=2)
    args = ap.parse_args()
    frames = 10_000
    rng = np.random.default_rng(7)
    qids = rng.choice(frames, 1000, replace=False)
    per = int(np.ceil(frames / len(bench.COMBOS)))
    jobs, region = [], []
    n = 0
    for r, (lat, _d, _df), twin in bench._region_twins(per, rng):
        m = min(per, frames - n)
        jobs.append((twin, m, lat))
        region += [r] * m
        n += m
    region_ = np.array(region)
    starts = np.cumsum([0] + [job[1] for job in jobs])
    cache = bench.WORK / f"crops_7_{bench.SEED}_{frames}_{ex.CROP_GRID}.npy"
    if cache.exists():
        views = np.load(cache)
    else:
        with Pool(args.procs) as pool:
            views = np.stack([v for b in pool.map(ex._describe_block, jobs, chunksize=1) for v in b])
        bench.WORK.mkdir(parents=True, exist_ok=True)
        np.save(cache, views)
    rows = []
    t_embed = 0.0
    for qi in qids[: args.queries]:
        r = int(region_[qi])
        src = jobs[r][0].acquire(int(qi - starts[r]))
        copy, px = bench.transformed_copy(src.image, src.pixel_size, rng)
        t0 = time.perf_counter()
        q = embed_frame(copy, px)
        t_embed += time.perf_counter() - t0
        own, best = views[:, 0] @ q, (views @ q).max(1)
        rows.append(
            (
                region_[int(np.argmax(own))] == r,
                region_[int(np.argmax(best))] == r,
                int((own > own[qi]).sum()),
                int((best > best[qi]).sum()),
            )
        )
    a = np.array(rows)
    res = {
        "archive_frames": frames,
        "queries": len(rows),
        "crops": f"{ex.CROP_GRID}x{ex.CROP_GRID}, side {ex.CROP_SHARE:.3f} of the frame's",
        "vectors_per_frame": 1 + ex.CROP_GRID**2,
        "top1_region": {"frame": float(a[:, 0].mean()), "crops": float(a[:, 1].mean())},
        "source_within": {
            str(m): {"frame": float((a[:, 2] < m).mean()), "crops": float((a[:, 3] < m).mean())}
            for m in (1, 10, 50, 100, 200, 600)
        },
    }
    bench._update("first_stage_crops", res)


if __name__ == "__main__":
    main()
