"""Crops as rows of the index, as the product stores them: invariance before/after, semantics, cost.

Run: ``PYTHONPATH=. nice -n 5 python benchmarks/similarity_crops.py [--queries 1000]``:
exactly ``similarity.py``'s 10 000-frame archive (seed 7, twin seed 2026) and its copies (the
first ``--queries`` of its 1000). Each archive frame is described by ``embed_views`` (its own
descriptor and its ``N_CROPS`` crops' from its own tile spectra, as the edge does) and put into
two ``VectorIndex`` es in the same run: ``frame`` (its own vector only: the index before this
change) and ``crops`` (every view a row; hits grouped by frame). Invariance: a copy's top-1
frame through ``VectorIndex.search`` is of its source's region; the source frame's rank.
Semantics on the same indexes: precision@10 of lattice and defect class for 1000 archive
frames (by their own vector, themselves left out), and the abTEM graphene frames' precision@10.
Cost: ``embed_views`` and ``embed_frame`` against edge inference of the same 256² frames in
alternating rounds. ``--rerank 50``: the store's second stage (``rerank.py``) over each
index's first 50 frames, for the first ``--rerank-queries`` copies. Writes
``first_stage_crops_product`` (``--key``) in ``benchmarks/results/similarity.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import similarity as bench

from storage.federation.similarity.index import VectorIndex
from tasks.embedding import EMBEDDER_VERSION, N_CROPS, embed_frame, embed_frames, embed_views


def _describe_block(job: tuple[Any, int]) -> tuple[np.ndarray, list[float], list[float]]:
    """Views (count, 1 + N_CROPS, DIM), pixel sizes and doses of a region's frames."""
    twin, count = job
    views, sizes, doses = [], [], []
    for i in range(count):
        im = twin.acquire(i)
        views.append(embed_views(im.image, im.pixel_size))
        sizes.append(float(im.pixel_size))
        doses.append(float(im.conditions["dose"]))
    return np.stack(views), sizes, doses


def _index(views: np.ndarray, crops: bool) -> VectorIndex:
    n = len(views)
    per = views.shape[1] if crops else 1
    index = VectorIndex("bench", None)
    flat = views[:, :per].reshape(n * per, -1)
    frame = np.repeat(np.arange(n), per)
    view = np.tile(np.arange(per), n)
    index.add(np.arange(1, n * per + 1), frame // 100 + 1, frame, flat, view)
    index.reorganise()  # as the store's maintenance: the lists when past exact size
    return index


def _frame_of(hit: tuple[int, int, float]) -> int:
    return int(hit[1])


def reranked_hit(
    out: dict[str, list[Any]],
    indexes: dict[str, VectorIndex],
    q: np.ndarray,
    copy: tuple[np.ndarray, float],
    jobs: list[tuple[Any, int]],
    starts: np.ndarray,
    region_: np.ndarray,
    r: int,
    m: int,
) -> None:
    """The store's second stage (``rerank.match``) over each index's first ``m`` frames (the
    candidates re-rendered from their twins, as the store reads them from their datasets)."""
    from storage.federation.similarity.rerank import match, prepare

    t0 = time.perf_counter()
    prepared = prepare(*copy)
    spent = time.perf_counter() - t0
    for name, ix in indexes.items():
        cands = [_frame_of(h) for h in ix.search(q, m, None)]
        scores = []
        for f in cands:
            rr = int(region_[f])
            im = jobs[rr][0].acquire(int(f - starts[rr]))  # rendering: not timed
            t0 = time.perf_counter()
            scores.append(match(prepared, prepare(im.image.astype(np.float32), im.pixel_size, mirror=False)))
            spent += time.perf_counter() - t0 if name == "crops" else 0.0
        out[name].append(bool(region_[cands[int(np.argmax(scores))]] == r))
    out["seconds"].append(spent)  # the query and the crops index's candidates prepared and matched


def cost(rounds: int = 5, batch: int = 16) -> dict[str, Any]:
    """Seconds per 256² frame: ``embed_views`` (frame + crops), ``embed_frames`` (frame only)
    and edge inference, alternating rounds on the same frames; ratios of the medians."""
    from tasks.acquisition.twin import DigitalTwin
    from tasks.inference.registry import load_ensemble

    ens = load_ensemble("production")
    twin = DigitalTwin(seed=3)
    frames = np.stack([twin.acquire(i).image for i in range(batch)])
    ens.analyse(frames, 0.12)
    embed_frames(frames, 0.12)
    [embed_views(f, 0.12) for f in frames]
    t_inf, t_emb, t_views = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        ens.analyse(frames, 0.12)
        t_inf.append((time.perf_counter() - t0) / batch)
        t0 = time.perf_counter()
        embed_frames(frames, 0.12)
        t_emb.append((time.perf_counter() - t0) / batch)
        t0 = time.perf_counter()
        [embed_views(f, 0.12) for f in frames]
        t_views.append((time.perf_counter() - t0) / batch)
    inf, emb, views = (float(np.median(t)) for t in (t_inf, t_emb, t_views))
    return {
        "edge_inference_s_per_frame": inf,
        "frame_descriptor_s_per_frame": emb,
        "frame_and_crops_s_per_frame": views,
        "ratio_frame_only": emb / inf,
        "ratio_with_crops": views / inf,
        "crops_over_frame": views / emb,
        "model": ens.version,
        "rounds": rounds,
        "torch_threads": __import__("torch").get_num_threads(),
        "load_average": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--no-cost", action="store_true")
    ap.add_argument(
        "--rerank", type=int, default=0, help="also re-rank the crops index's first N (store's second stage)"
    )
    ap.add_argument("--rerank-queries", type=int, default=100, help="queries re-ranked (the first N)")
    ap.add_argument("--key", default="first_stage_crops_product", help="results key written")
    args = ap.parse_args()
    frames = 10_000
    rng = np.random.default_rng(7)
    qids = rng.choice(frames, 1000, replace=False)
    per = int(np.ceil(frames / len(bench.COMBOS)))
    jobs, region, combos = [], [], []
    n = 0
    for r, combo, twin in bench._region_twins(per, rng):
        m = min(per, frames - n)
        jobs.append((twin, m))
        region += [r] * m
        combos += [combo] * m
        n += m
    region_ = np.array(region)
    lattice = np.array([c[0] for c in combos])
    defect = np.array([c[1] for c in combos])
    starts = np.cumsum([0] + [job[1] for job in jobs])
    cache = bench.WORK / f"views_{EMBEDDER_VERSION}_7_{bench.SEED}_{frames}.npz"
    if cache.exists():
        z = np.load(cache)
        views, sizes, doses = z["views"], z["sizes"], z["doses"]
    else:
        t0 = time.perf_counter()
        with Pool(args.procs) as pool:
            blocks = pool.map(_describe_block, jobs, chunksize=1)
        views = np.concatenate([b[0] for b in blocks])
        sizes = np.array([s for b in blocks for s in b[1]])
        doses = np.array([d for b in blocks for d in b[2]])
        print(f"archive described in {time.perf_counter() - t0:.0f} s", flush=True)
        bench.WORK.mkdir(parents=True, exist_ok=True)
        np.savez(cache, views=views, sizes=sizes, doses=doses)
    indexes = {"frame": _index(views, False), "crops": _index(views, True)}
    for name, ix in indexes.items():
        print(f"{name}: {len(ix)} rows, {ix.lists} lists, nprobe {ix.nprobe}", flush=True)
    hits: dict[str, list[bool]] = {name: [] for name in indexes}
    ranks: dict[str, list[int]] = {name: [] for name in indexes}
    lat: dict[str, list[float]] = {name: [] for name in indexes}
    q_dose = []
    reranked: dict[str, list[Any]] = {"frame": [], "crops": [], "seconds": []}
    for j, qi in enumerate(qids[: args.queries]):
        r = int(region_[qi])
        src = jobs[r][0].acquire(int(qi - starts[r]))
        copy, px = bench.transformed_copy(src.image, src.pixel_size, rng)
        q = embed_frame(copy, px)
        q_dose.append(doses[qi])
        if args.rerank and j < args.rerank_queries:
            reranked_hit(reranked, indexes, q, (copy, px), jobs, starts, region_, r, args.rerank)
        for name, ix in indexes.items():
            t0 = time.perf_counter()
            top = ix.search(q, 10, None)
            lat[name].append(time.perf_counter() - t0)
            hits[name].append(bool(region_[_frame_of(top[0])] == r))
            # The source frame's rank among frames (a frame's score its best row): exact.
            per_ = views.shape[1] if name == "crops" else 1
            best = (views[:, :per_] @ q).max(axis=1)
            ranks[name].append(int((best > best[qi]).sum()))
    q_dose_ = np.array(q_dose)
    bands = ((1e5, 1e6), (1e6, 5e6), (5e6, 2.1e7))
    invariance = {}
    for name in indexes:
        h, rk = np.array(hits[name]), np.array(ranks[name])
        invariance[name] = {
            "top1_region": float(h.mean()),
            "top1_by_source_dose": {
                f"{lo:.0e}-{hi:.0e}": float(h[(q_dose_ >= lo) & (q_dose_ < hi)].mean()) for lo, hi in bands
            },
            "source_within": {str(m): float((rk < m).mean()) for m in (1, 10, 50, 200, 600)},
            "search_p50_ms": float(np.percentile(lat[name], 50) * 1e3),
            "search_p95_ms": float(np.percentile(lat[name], 95) * 1e3),
        }
        print(name, invariance[name], flush=True)
    if args.rerank:
        invariance["reranked"] = {
            "candidates": args.rerank,
            "queries": len(reranked["crops"]),
            "top1_region_frame_index": float(np.mean(reranked["frame"])),
            "top1_region_crops_index": float(np.mean(reranked["crops"])),
            "first_stage_same_queries": {
                name: float(np.mean(hits[name][: len(reranked["crops"])])) for name in indexes
            },
            "s_per_query_p50": float(np.percentile(reranked["seconds"], 50)),
            "s_per_query_p95": float(np.percentile(reranked["seconds"], 95)),
        }
        print("reranked", invariance["reranked"], flush=True)
    sem_ids = rng.choice(frames, 1000, replace=False)
    abtem = [p for p in sorted(bench.ABTEM.glob("*.npy")) if not p.name.startswith("truth")]
    q_ab = embed_frames([np.load(p).astype(np.float32) for p in abtem], 0.1)
    semantics = {}
    for name, ix in indexes.items():
        p_lat, p_def = [], []
        for i in sem_ids:
            got = [f for f in (_frame_of(h) for h in ix.search(views[i, 0], 11, None)) if f != i][:10]
            p_lat.append(np.mean(lattice[got] == lattice[i]))
            p_def.append(np.mean(defect[got] == defect[i]))
        ab = [np.mean(lattice[[_frame_of(h) for h in ix.search(q, 10, None)]] == "graphene") for q in q_ab]
        semantics[name] = {
            "precision_at_10_lattice": float(np.mean(p_lat)),
            "precision_at_10_defect": float(np.mean(p_def)),
            "abtem_precision_at_10_graphene": float(np.mean(ab)),
        }
        print(name, semantics[name], flush=True)
    res = {
        "embedder": EMBEDDER_VERSION,
        "archive_frames": frames,
        "queries": len(q_dose),
        "crops": f"{N_CROPS} per frame from the frame's own tile spectra (tasks.embedding.embed_views)",
        "rows": {name: len(ix) for name, ix in indexes.items()},
        "lists": {name: ix.lists for name, ix in indexes.items()},
        "nprobe": {name: ix.nprobe for name, ix in indexes.items()},
        "invariance": invariance,
        "semantics": semantics,
        "load_average": os.getloadavg(),
        **({} if args.no_cost else {"cost": cost()}),
    }
    bench._update(args.key, res)


if __name__ == "__main__":
    main()
