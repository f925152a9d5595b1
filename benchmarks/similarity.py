"""Similarity search: the embedder's invariance and semantics, its cost, the vector index, the map.

Run: ``PYTHONPATH=. nice -n 5 python benchmarks/similarity.py [--part quality|index|index-views|map|all]``.
Writes ``benchmarks/results/similarity.json`` (each part updates its own key).

- quality: a 10k-frame twin archive of 36 sample regions (3 lattices × 4 defect classes × 3
  defoci); inside a region each frame lies elsewhere on the sample, at its own dose
  (1e5-2e7 e/Å²) and pixel size (0.09-0.16 Å/px). Invariance: 1000 copies of archive frames,
  each re-noised at 30-100 % of its dose, rotated by any angle, mirrored half the time,
  shifted and rescaled 0.8-1.25× (pixel size updated), must find a frame of their source's
  region first. Semantics: precision@10 of lattice and of defect class over 1000 archive
  queries; the abTEM graphene frames (../shared/data, never used to design anything) as
  queries against the twin archive. Baselines on the same data: raw pixels downsampled to
  32×32, and the production ensemble's pooled encoder features, both by exact cosine search.
  Cost: the descriptor against edge inference of the same 256² frames (alternating runs).
- index: see ``index_part``; index-views: ``index_views_part`` (crop rows; needs the views cache
  of ``similarity_crops.py``). map: see ``map_part``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine

from tasks.acquisition.twin import Change, DigitalTwin, DriftSchedule
from tasks.embedding import EMBEDDER_VERSION, embed_frame, embed_frames

ABTEM = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "abtem-graphene"
LATTICES = ("graphene", "mos2", "perovskite")
DEFECTS = {
    "pristine": {"vacancy_rate": 0.0, "substitution_rate": 0.0, "contamination": 0.0},
    "vacancies": {"vacancy_rate": 0.06, "substitution_rate": 0.0, "contamination": 0.0},
    "dopants": {"vacancy_rate": 0.0, "substitution_rate": 0.06, "contamination": 0.0},
    "amorphous": {"vacancy_rate": 0.01, "substitution_rate": 0.005, "contamination": 0.5},
}
DEFOCI = (0.0, 40.0, 80.0)
SEED = 2026
WORK = Path("/tmp/scopeflow-similarity-bench")


def _result_path() -> Path:
    return RESULTS / "similarity.json"


def _update(part: str, figures: dict[str, Any]) -> None:
    path = _result_path()
    payload = json.loads(path.read_text()) if path.exists() else {"benchmark": "similarity"}
    payload["machine"] = machine()
    payload["machine"]["note"] = "shared with 4 other engineers' jobs; run under nice -n 5"
    payload[part] = figures
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    print(json.dumps({part: figures}, indent=2, default=float))


COMBOS = [(lat, d, df) for lat in LATTICES for d in DEFECTS for df in DEFOCI]


def _region_twins(per: int, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    """Per archive region: its index, (lattice, defect class, defocus) and a twin whose ``per``
    frames each get their own dose and pixel size from ``rng`` (the draws stay in step, so the
    encoder baseline re-renders exactly the archive's frames)."""
    for r, (lat, defect, df) in enumerate(COMBOS):
        doses = np.exp(rng.uniform(np.log(1e5), np.log(2e7), per))
        sizes = rng.uniform(0.09, 0.16, per)
        changes = [Change("dose", float(v), i) for i, v in enumerate(doses)]
        changes += [Change("pixel_size", float(v), i) for i, v in enumerate(sizes)]
        base = {
            "lattice": lat,
            "region": r + 1,
            "defocus": df,
            "drift_x": 7.3,
            "drift_y": 3.1,
            **DEFECTS[defect],
        }
        yield r, (lat, defect, df), DigitalTwin(seed=SEED, schedule=DriftSchedule(tuple(changes), base))


def archive(
    n_frames: int, rng: np.random.Generator, keep: set[int], keep_all: bool = False
) -> dict[str, Any]:
    """Render the archive; returns labels, pixel sizes, descriptors, 32² thumbnails, kept frames
    (every frame with ``keep_all``: the re-ranking reads its candidates)."""
    per = int(np.ceil(n_frames / len(COMBOS)))
    out: dict[str, list[Any]] = {
        k: [] for k in ("region", "lattice", "defect", "pixel_size", "dose", "emb", "raw")
    }
    kept: dict[int, np.ndarray] = {}
    t_render = t_embed = 0.0
    n = 0
    for r, (lat, defect, _df), twin in _region_twins(per, rng):
        for i in range(per):
            if n >= n_frames:
                break
            t0 = time.perf_counter()
            frame = twin.acquire(i)
            t1 = time.perf_counter()
            out["emb"].append(embed_frame(frame.image, frame.pixel_size))
            t_embed += time.perf_counter() - t1
            t_render += t1 - t0
            out["raw"].append(_raw(frame.image))
            for key, value in (
                ("region", r),
                ("lattice", lat),
                ("defect", defect),
                ("pixel_size", frame.pixel_size),
                ("dose", float(frame.conditions["dose"])),
            ):
                out[key].append(value)
            if keep_all or n in keep:
                kept[n] = frame.image.astype(np.float32)
            n += 1
    print(f"archive: {n} frames, render {t_render:.0f} s, embed {t_embed:.0f} s", flush=True)
    return {
        "region": np.array(out["region"]),
        "lattice": np.array(out["lattice"]),
        "defect": np.array(out["defect"]),
        "pixel_size": np.array(out["pixel_size"]),
        "dose": np.array(out["dose"]),
        "emb": np.array(out["emb"], np.float32),
        "raw": np.array(out["raw"], np.float32),
        "kept": kept,
    }


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _raw(image: np.ndarray) -> np.ndarray:
    """The raw-pixel baseline: the frame resized to 32×32, standardised, unit length."""
    small = ndimage.zoom(image.astype(np.float32), (32 / image.shape[0], 32 / image.shape[1]), order=1)
    small = small[:32, :32]
    small = (small - small.mean()) / max(float(small.std()), 1e-12)
    return _unit(small.ravel())


def transformed_copy(
    image: np.ndarray, pixel_size: float, rng: np.random.Generator, drawn: dict[str, float] | None = None
) -> tuple[np.ndarray, float]:
    """Re-noised at 30-100 % of the dose, rotated by any angle, mirrored half the time, shifted,
    rescaled 0.8-1.25× (pixel size updated): only pixels the source saw are kept. ``drawn``, if
    given, receives the draws (angle °, shift px, mirror, scale, dose share)."""
    angle = rng.uniform(0, 360)
    rotated = ndimage.rotate(image.astype(np.float32), angle, reshape=True, order=3)
    side = int(image.shape[0] / np.sqrt(2)) - 16  # inside the rotated frame, with room to shift
    shift = rng.integers(-8, 9, 2)
    cy, cx = np.array(rotated.shape) // 2 + shift
    crop = rotated[cy - side // 2 : cy + side // 2, cx - side // 2 : cx + side // 2]
    mirror = rng.random() < 0.5
    if mirror:
        crop = crop[:, ::-1]
    scale = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    zoomed = ndimage.zoom(crop, scale, order=3)
    # Re-noised last, as a new acquisition would be: fresh white counting noise at 30-100 % of
    # the dose, on top of what resampling left of the old noise.
    share = rng.uniform(0.3, 1.0)
    renoised = rng.poisson(np.clip(zoomed, 0, None) * share).astype(np.float32)
    if drawn is not None:
        drawn.update(
            angle=float(angle),
            shift=float(np.hypot(*shift)),
            mirror=float(mirror),
            scale=scale,
            dose_share=share,
        )
    return renoised, pixel_size / scale


def _topk(db: np.ndarray, q: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    sims = q @ db.T
    if exclude is not None:
        sims[np.arange(len(q)), exclude] = -np.inf
    idx = np.argpartition(-sims, k, axis=1)[:, :k]
    order = np.take_along_axis(sims, idx, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(idx, order, axis=1)


def _encoder(frames: list[np.ndarray], sizes: list[float]) -> np.ndarray:
    from tasks.inference.registry import load_ensemble

    ens = load_ensemble("production")
    return _unit(ens.embed(frames, sizes))


def quality_part(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    n_queries = args.queries
    query_ids = rng.choice(args.frames, n_queries, replace=False)
    arch = archive(args.frames, rng, set(query_ids.tolist()), keep_all=args.rerank > 0)
    WORK.mkdir(parents=True, exist_ok=True)
    if args.key == "quality":  # the index and map parts build on the full archive's descriptors
        np.savez(WORK / "archive.npz", emb=arch["emb"], lattice=arch["lattice"], defect=arch["defect"])
    copies = [transformed_copy(arch["kept"][i], arch["pixel_size"][i], rng) for i in query_ids]
    q_ours = embed_frames([c[0] for c in copies], [c[1] for c in copies])
    q_raw = np.array([_raw(c[0]) for c in copies])
    methods: dict[str, dict[str, Any]] = {}

    # The encoder baseline needs every archive frame again (not kept): re-render them.
    enc_db = None
    if not args.no_encoder:
        t0 = time.perf_counter()
        enc_db = _encoder_archive(args.frames, n_queries)
        print(f"encoder archive features: {time.perf_counter() - t0:.0f} s", flush=True)
        q_enc = _encoder([c[0] for c in copies], [c[1] for c in copies])

    abtem = sorted(ABTEM.glob("*.npy"))
    abtem = [p for p in abtem if not p.name.startswith("truth")]
    ab_frames = [np.load(p).astype(np.float32) for p in abtem]
    sem_ids = rng.choice(args.frames, min(1000, args.frames), replace=False)
    for name, db, q in (
        ("ours", arch["emb"], q_ours),
        ("raw_pixels", arch["raw"], q_raw),
        *((("encoder_pooled", enc_db, q_enc),) if enc_db is not None else ()),
    ):
        top1 = _topk(db, q, 1)[:, 0]
        hit = arch["region"][top1] == arch["region"][query_ids]
        invariance = float(np.mean(hit))
        # By the source frame's dose: below ~1e6 e/Å² a single frame barely shows the probe's
        # envelope, which is what tells the regions' defoci apart.
        q_dose = arch["dose"][query_ids]
        by_dose = {
            f"{lo:.0e}-{hi:.0e}": float(np.mean(hit[(q_dose >= lo) & (q_dose < hi)]))
            for lo, hi in ((1e5, 1e6), (1e6, 5e6), (5e6, 2.1e7))
            if np.any((q_dose >= lo) & (q_dose < hi))
        }
        nn = _topk(db, db[sem_ids], 10, exclude=sem_ids)
        p_lat = float(np.mean(arch["lattice"][nn] == arch["lattice"][sem_ids][:, None]))
        p_def = float(np.mean(arch["defect"][nn] == arch["defect"][sem_ids][:, None]))
        by_def = {d: float(np.mean(arch["defect"][nn[arch["defect"][sem_ids] == d]] == d)) for d in DEFECTS}
        if name == "ours":
            q_ab = embed_frames(ab_frames, 0.1)
        elif name == "raw_pixels":
            q_ab = np.array([_raw(f) for f in ab_frames])
        else:
            q_ab = _encoder(ab_frames, [0.1] * len(ab_frames))
        ab_nn = _topk(db, q_ab, 10)
        ab_prec = float(np.mean(arch["lattice"][ab_nn] == "graphene"))
        methods[name] = {
            "invariance_top1_region": invariance,
            "invariance_top1_by_source_dose": by_dose,
            "precision_at_10_lattice": p_lat,
            "precision_at_10_defect": p_def,
            "precision_at_10_defect_by_class": by_def,
            "abtem_precision_at_10_graphene": ab_prec,
            "abtem_per_frame": {
                p.stem: float(np.mean(arch["lattice"][row] == "graphene"))
                for p, row in zip(abtem, ab_nn, strict=True)
            },
        }
        print(name, json.dumps(methods[name]), flush=True)
    if args.rerank > 0:
        methods["ours_reranked"] = rerank_part(arch, query_ids, copies, q_ours, args)
    return {
        "embedder": EMBEDDER_VERSION,
        "archive_frames": int(args.frames),
        "regions": int(arch["region"].max() + 1),
        "invariance_queries": int(n_queries),
        "semantic_queries": int(min(1000, args.frames)),
        "dim": int(arch["emb"].shape[1]),
        "methods": methods,
        **({} if args.no_cost else {"cost": cost()}),
    }


def rerank_part(
    arch: dict[str, Any],
    query_ids: np.ndarray,
    copies: list[tuple[np.ndarray, float]],
    q_emb: np.ndarray,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The second stage: the index's top ``args.rerank`` (exact search here) re-ranked by
    registering the query onto each candidate (``storage.federation.similarity.rerank``).
    Time per query: preparing the query and every candidate (as the store does, which reads
    each candidate frame from its dataset) and matching."""
    from storage.federation.similarity.rerank import match, prepare

    n = min(len(query_ids), args.rerank_queries)
    top = _topk(arch["emb"], q_emb[:n], args.rerank)
    sims = q_emb @ arch["emb"].T  # every query: the rank of its source among the archive
    rank = (sims > sims[np.arange(len(query_ids)), query_ids][:, None]).sum(axis=1)
    hit, seconds, source_in = [], [], []
    prefixes = [m for m in (10, 20, 50, 100) if m < args.rerank]
    hit_prefix: dict[int, list[bool]] = {m: [] for m in prefixes}
    for j in range(n):
        t0 = time.perf_counter()
        q = prepare(*copies[j])
        scores = [
            match(q, prepare(arch["kept"][int(i)], float(arch["pixel_size"][i]), mirror=False))
            for i in top[j]
        ]
        seconds.append(time.perf_counter() - t0)
        best = int(top[j][int(np.argmax(scores))])
        hit.append(arch["region"][best] == arch["region"][query_ids[j]])
        source_in.append(query_ids[j] in top[j])
        for m in prefixes:  # fewer candidates: the best of the index's first m
            hit_prefix[m].append(
                arch["region"][top[j][int(np.argmax(scores[:m]))]] == arch["region"][query_ids[j]]
            )
        if j % 50 == 0:
            print(
                f"rerank {j}/{n}: top-1 so far {np.mean(hit):.3f}, {np.mean(seconds):.2f} s/query", flush=True
            )
    hit_ = np.array(hit)
    first = arch["region"][top[:, 0]] == arch["region"][query_ids[:n]]
    q_dose = arch["dose"][query_ids[:n]]
    bands = ((1e5, 1e6), (1e6, 5e6), (5e6, 2.1e7))
    return {
        "candidates": int(args.rerank),
        "queries": int(n),
        "invariance_top1_region": float(hit_.mean()),
        "first_stage_top1_same_queries": float(first.mean()),
        "source_frame_in_candidates": float(np.mean(source_in)),
        "invariance_top1_by_source_dose": {
            f"{lo:.0e}-{hi:.0e}": float(np.mean(hit_[(q_dose >= lo) & (q_dose < hi)]))
            for lo, hi in bands
            if np.any((q_dose >= lo) & (q_dose < hi))
        },
        "invariance_top1_with_fewer_candidates": {str(m): float(np.mean(v)) for m, v in hit_prefix.items()},
        # The ceiling of any re-ranking of the index's first m: how often the source is among them.
        "source_frame_within_first": {
            str(m): float(np.mean(rank < m)) for m in (1, 10, 20, 50, 100, 200, 500)
        },
        "rerank_s_per_query_p50": float(np.percentile(seconds, 50)),
        "rerank_s_per_query_p95": float(np.percentile(seconds, 95)),
    }


def _encoder_archive(n_frames: int, n_queries: int) -> np.ndarray:
    """Pooled encoder features of the archive (re-rendered with the same seeds, in region blocks)."""
    from tasks.inference.registry import load_ensemble

    ens = load_ensemble("production")
    rng = np.random.default_rng(7)
    rng.choice(n_frames, n_queries, replace=False)  # keep the archive's draws in step
    per = int(np.ceil(n_frames / len(COMBOS)))
    feats = []
    n = 0
    for _, _, twin in _region_twins(per, rng):
        m = min(per, n_frames - n)
        frames = [twin.acquire(i) for i in range(m)]
        feats.append(ens.embed([f.image for f in frames], [f.pixel_size for f in frames]))
        n += m
    return _unit(np.concatenate(feats))


def cost(rounds: int = 5, batch: int = 16) -> dict[str, Any]:
    """Seconds per 256² frame: the descriptor against edge inference (fused ensemble, atoms
    decoded), in alternating rounds on the same frames; the ratio of the medians."""
    from tasks.inference.registry import load_ensemble

    ens = load_ensemble("production")
    twin = DigitalTwin(seed=3)
    frames = np.stack([twin.acquire(i).image for i in range(batch)])
    ens.analyse(frames, 0.12)  # warm
    embed_frames(frames, 0.12)
    t_inf, t_emb = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        ens.analyse(frames, 0.12)
        t_inf.append((time.perf_counter() - t0) / batch)
        t0 = time.perf_counter()
        embed_frames(frames, 0.12)
        t_emb.append((time.perf_counter() - t0) / batch)
    inf, emb = float(np.median(t_inf)), float(np.median(t_emb))
    return {
        "edge_inference_s_per_frame": inf,
        "embedding_s_per_frame": emb,
        "ratio": emb / inf,
        "model": ens.version,
        "members": ens.members,
        "rounds": rounds,
        "torch_threads": __import__("torch").get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--part", choices=("quality", "index", "index-views", "map", "rerank-store", "all"), default="all"
    )
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--vectors", type=int, default=1_000_000)
    ap.add_argument("--no-encoder", action="store_true")
    ap.add_argument("--no-cost", action="store_true", help="skip timing the descriptor against inference")
    ap.add_argument("--key", default="quality", help="the results key the quality part writes")
    ap.add_argument("--rerank", type=int, default=0, help="candidates the second stage re-ranks (0: none)")
    ap.add_argument("--store-queries", type=int, default=40, help="queries of the rerank-store part")
    ap.add_argument("--rerank-queries", type=int, default=1000, help="queries re-ranked (the first N)")
    args = ap.parse_args()
    if args.part in ("quality", "all"):
        _update(args.key, quality_part(args))
    if args.part in ("index", "all"):
        from similarity_index import index_part

        _update("index", index_part(args))
    if args.part in ("index-views", "all"):
        from similarity_index import index_views_part

        _update("index_views", index_views_part(args))
    if args.part in ("rerank-store", "all"):
        from similarity_index import rerank_store_part

        _update("rerank_store", rerank_store_part(args))
    if args.part in ("map", "all"):
        from similarity_index import map_part

        _update("map", map_part(args))


if __name__ == "__main__":
    main()
