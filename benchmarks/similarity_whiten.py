"""Where the first stage loses a copy's source, and a whitening of the descriptor against it.

Run: ``PYTHONPATH=. nice -n 5 python benchmarks/similarity_whiten.py [--dev-per 60 --dev-queries 1200]
[--queries 1000]``.

Development set (never scored): the 36 regions of ``similarity.py`` rendered by another twin
(seed ``DEV_TWIN``, draws from ``default_rng(DEV_SEED)``), ``--dev-per`` frames each, every
frame described by ``embed_views`` as the archive stores it, and ``--dev-queries`` copies made
by ``similarity.transformed_copy`` with their draws recorded. On it: where the first stage
loses the source (the source frame's rank among frames, a frame's score its best row, exact),
split by transform (angle off the quarter turns, mirror, scale, shift, dose share) and by the
source's dose, defect class and defocus; and a whitening of the descriptor (``fit``, a probe):
the copies' differences to their source's nearest row give the within-copy covariance, fitted
on the first half of the copies, its shrinkage chosen by top-1 on the second half, refitted
on all with that shrinkage (not in the product: see benchmarks/README.md).

Scored set: ``similarity_crops.py``'s archive and copies exactly (10 000 frames, seed 7, twin
2026; its views cache), the first ``--queries`` copies; the store's rows before (the cache) and
after whitening (the same rows mapped), exact search. Writes
``--key`` (``whitening``) in ``benchmarks/results/similarity.json``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import similarity as bench

from tasks.embedding import descriptor as desc

DEV_SEED, DEV_TWIN = 11, 2031
DRAWS = ("angle", "shift", "mirror", "scale", "dose_share")
#: Shrinkages tried on the development copies, as shares of the mean eigenvalue: from nearly
#: the measured covariance alone (0.01) to nearly the plain cosine (10).
SHRINKS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def fit(diffs: np.ndarray, shrink: float) -> np.ndarray:
    """Within-class covariance normalisation (Hatch et al. 2006): the symmetric map (d, d)
    ``(S + shrink·tr(S)/d·I)^-1/2`` of the second moment ``S`` of ``diffs`` (n, d: copy less
    source), so that a unit of distance is a typical copy's change in every direction."""
    s = diffs.T @ diffs / len(diffs)
    d = s.shape[0]
    s = s + shrink * float(np.trace(s)) / d * np.eye(d)
    vals, vecs = np.linalg.eigh(s)
    return (vecs / np.sqrt(vals)) @ vecs.T


def apply(vectors: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``vectors`` (..., d) mapped by ``w`` and brought back to unit length."""
    out = np.asarray(vectors, np.float64) @ w
    norm = np.linalg.norm(out, axis=-1, keepdims=True)
    return np.divide(out, norm, out=np.zeros_like(out), where=norm > 0)


def render(seed: int, twin_seed: int, per: int, n_frames: int, n_queries: int, first: bool) -> dict[str, Any]:
    """Archive views and query copies. ``first``: the query ids are drawn before the archive's
    draws (``similarity_crops.py``'s order), else after."""
    rng = np.random.default_rng(seed)
    qids = rng.choice(n_frames, n_queries, replace=False) if first else None
    saved = bench.SEED
    bench.SEED = twin_seed
    try:
        twins = list(bench._region_twins(per, rng))
    finally:
        bench.SEED = saved
    region, combos, jobs, n = [], [], [], 0
    for r, combo, twin in twins:
        m = min(per, n_frames - n)
        jobs.append((twin, m))
        region += [r] * m
        combos += [combo] * m
        n += m
    starts = np.cumsum([0] + [m for _, m in jobs])
    if qids is None:
        qids = rng.choice(n_frames, n_queries, replace=False)
    return {
        "rng": rng,
        "qids": qids,
        "jobs": jobs,
        "starts": starts,
        "region": np.array(region),
        "lattice": np.array([c[0] for c in combos]),
        "defect": np.array([c[1] for c in combos]),
        "defocus": np.array([c[2] for c in combos]),
    }


def describe_archive(s: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    views, doses = [], []
    for twin, m in s["jobs"]:
        for i in range(m):
            im = twin.acquire(i)
            views.append(desc.embed_views(im.image, im.pixel_size))
            doses.append(float(im.conditions["dose"]))
    return np.stack(views), np.array(doses)


def copies(
    s: dict[str, Any], n: int
) -> tuple[np.ndarray, list[dict[str, float]], list[tuple[np.ndarray, float]]]:
    """The first ``n`` query copies' plain descriptors and draws, in ``similarity_crops`` order."""
    rng, out, drawn, imgs = s["rng"], [], [], []
    for qi in s["qids"][:n]:
        r = int(s["region"][qi])
        src = s["jobs"][r][0].acquire(int(qi - s["starts"][r]))
        d: dict[str, float] = {}
        img, px = bench.transformed_copy(src.image, src.pixel_size, rng, d)
        out.append(desc.embed_frame(img, px))
        drawn.append(d)
        imgs.append((img, px))
    return np.stack(out), drawn, imgs


def ranks(
    views: np.ndarray, q: np.ndarray, qids: np.ndarray, region: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: the source frame's rank among frames (best row) and whether the top frame is
    of its region (exact)."""
    rk, top = [], []
    flat = views.reshape(-1, views.shape[-1])
    for j, qi in enumerate(qids[: len(q)]):
        best = (flat @ q[j]).reshape(views.shape[:2]).max(axis=1)
        rk.append(int((best > best[qi]).sum()))
        top.append(bool(region[int(np.argmax(best))] == region[qi]))
    return np.array(rk), np.array(top)


def breakdown(
    rk: np.ndarray, top: np.ndarray, drawn: list[dict[str, float]], s: dict[str, Any], doses: np.ndarray
) -> dict[str, Any]:
    """Top-1 region and source-within-50 split by transform and by source."""
    qids = s["qids"][: len(rk)]
    off = np.array([min(d["angle"] % 90, 90 - d["angle"] % 90) for d in drawn])
    feats = {
        "angle_off_quarter_deg": (off, (0, 15, 30, 46)),
        "mirror": (np.array([d["mirror"] for d in drawn]), (0, 0.5, 1.5)),
        "scale": (np.array([d["scale"] for d in drawn]), (0.79, 0.9, 1.1, 1.26)),
        "shift_px": (np.array([d["shift"] for d in drawn]), (0, 4, 8, 12)),
        "dose_share": (np.array([d["dose_share"] for d in drawn]), (0.3, 0.55, 0.8, 1.0001)),
        "source_dose": (doses[qids], (1e5, 1e6, 5e6, 2.1e7)),
    }
    out: dict[str, Any] = {}
    for name, (x, edges) in feats.items():
        rows = {}
        for lo, hi in itertools.pairwise(edges):
            sel = (x >= lo) & (x < hi)
            if sel.any():
                rows[f"{lo:g}-{hi:g}"] = {
                    "n": int(sel.sum()),
                    "top1": float(top[sel].mean()),
                    "within_50": float((rk[sel] < 50).mean()),
                }
        out[name] = rows
    for name in ("defect", "defocus", "lattice"):
        lab = s[name][qids]
        out[name] = {
            str(v): {
                "n": int((lab == v).sum()),
                "top1": float(top[lab == v].mean()),
                "within_50": float((rk[lab == v] < 50).mean()),
            }
            for v in np.unique(lab)
        }
    return out


def misses(views: np.ndarray, q: np.ndarray, s: dict[str, Any]) -> dict[str, int]:
    """What the wrongly first region shares with the source."""
    flat = views.reshape(-1, views.shape[-1])
    kinds: dict[str, int] = {}
    for j, qi in enumerate(s["qids"][: len(q)]):
        best = (flat @ q[j]).reshape(views.shape[:2]).max(axis=1)
        f = int(np.argmax(best))
        if s["region"][f] == s["region"][qi]:
            continue
        same = [k for k in ("lattice", "defect", "defocus") if s[k][f] == s[k][qi]]
        key = "same " + "+".join(same) if same else "nothing shared"
        kinds[key] = kinds.get(key, 0) + 1
    return kinds


def within_pairs(views: np.ndarray, q: np.ndarray, qids: np.ndarray) -> np.ndarray:
    """Each copy's descriptor less its source's row nearest to it (plain descriptors)."""
    src = views[qids[: len(q)]]  # (n, rows, dim)
    nearest = np.argmax(np.einsum("nrd,nd->nr", src, q), axis=1)
    return q - src[np.arange(len(q)), nearest]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dev-per", type=int, default=60)
    ap.add_argument("--dev-queries", type=int, default=1200)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--skip-scored", action="store_true")
    ap.add_argument("--key", default="whitening", help="results key written")
    args = ap.parse_args()
    t0 = time.perf_counter()
    n_dev = args.dev_per * len(bench.COMBOS)
    dev = render(DEV_SEED, DEV_TWIN, args.dev_per, n_dev, args.dev_queries, first=False)
    cache = (
        bench.WORK
        / f"whiten_dev_{desc.EMBEDDER_VERSION}_{DEV_SEED}_{DEV_TWIN}_{n_dev}_{args.dev_queries}.npz"
    )
    if cache.exists():
        z = np.load(cache)
        d_views, d_doses, d_q = z["views"], z["doses"], z["queries"]
        d_drawn = [dict(zip(DRAWS, row, strict=True)) for row in z["drawn"]]
    else:
        d_views, d_doses = describe_archive(dev)
        d_q, d_drawn, _ = copies(dev, args.dev_queries)
        bench.WORK.mkdir(parents=True, exist_ok=True)
        drawn_ = np.array([[d[k] for k in DRAWS] for d in d_drawn])
        np.savez(cache, views=d_views, doses=d_doses, queries=d_q, drawn=drawn_)
    print(f"development set rendered in {time.perf_counter() - t0:.0f} s", flush=True)
    rk, top = ranks(d_views, d_q, dev["qids"], dev["region"])
    result: dict[str, Any] = {
        "development": {
            "embedder": desc.EMBEDDER_VERSION,
            "seed": DEV_SEED,
            "twin_seed": DEV_TWIN,
            "frames": n_dev,
            "queries": len(d_q),
            "plain": {
                "top1_region": float(top.mean()),
                "source_within": {str(m): float((rk < m).mean()) for m in (1, 10, 50, 200)},
                "breakdown": breakdown(rk, top, d_drawn, dev, d_doses),
                "misses": misses(d_views, d_q, dev),
            },
        }
    }
    print(result["development"]["plain"], flush=True)
    half = len(d_q) // 2
    diffs = within_pairs(d_views, d_q, dev["qids"])
    held = {}
    for shrink in SHRINKS:
        w = fit(diffs[:half], shrink)
        vw = apply(d_views, w)
        qw = apply(d_q[half:], w)
        rk_h, top_h = ranks(vw, qw, dev["qids"][half:], dev["region"])
        held[str(shrink)] = {
            "top1_region": float(top_h.mean()),
            "source_within_50": float((rk_h < 50).mean()),
        }
        print("shrink", shrink, held[str(shrink)], flush=True)
    rk_p, top_p = ranks(d_views, d_q[half:], dev["qids"][half:], dev["region"])
    chosen = max(SHRINKS, key=lambda s_: held[str(s_)]["top1_region"])
    result["development"]["second_half"] = {
        "plain": {"top1_region": float(top_p.mean()), "source_within_50": float((rk_p < 50).mean())},
        "whitened_by_shrink": held,
        "chosen_shrink": chosen,
    }
    w = fit(diffs, chosen)
    if not args.skip_scored:
        result["scored"] = scored(args.queries, w)
    result["load_average"] = os.getloadavg()
    bench._update(args.key, result)


def scored(n_queries: int, w: np.ndarray) -> dict[str, Any]:
    """``similarity_crops.py``'s archive (its cache) and copies, before and after whitening."""
    frames = 10_000
    s = render(7, bench.SEED, int(np.ceil(frames / len(bench.COMBOS))), frames, 1000, first=True)
    # similarity_crops.py's cache of the archive's rows for the current embedder (run it first).
    cache = bench.WORK / f"views_{desc.EMBEDDER_VERSION}_7_{bench.SEED}_{frames}.npz"
    z = np.load(cache)
    views, doses = z["views"], z["doses"]
    q, drawn, _ = copies(s, n_queries)
    out: dict[str, Any] = {"frames": frames, "queries": len(q), "embedder": desc.EMBEDDER_VERSION}
    for name, (v, qq, ww) in {
        "plain": (views, q, None),
        "whitened": (apply(views, w), apply(q, w), w),
    }.items():
        rk, top = ranks(v, qq, s["qids"], s["region"])
        out[name] = {
            "top1_region": float(top.mean()),
            "source_within": {str(m): float((rk < m).mean()) for m in (1, 10, 50, 200, 600)},
            "breakdown": breakdown(rk, top, drawn, s, doses),
            "misses": misses(v, qq, s),
            "semantics": semantics(v, s, ww),
        }
        print(name, {k: out[name][k] for k in ("top1_region", "source_within", "semantics")}, flush=True)
    return out


def semantics(views: np.ndarray, s: dict[str, Any], w: np.ndarray | None) -> dict[str, float]:
    """precision@10 by lattice and defect (1000 archive frames by their own row, hits grouped
    by frame, themselves left out), and the abTEM graphene frames' precision@10."""
    rng = np.random.default_rng(7)
    ids = rng.choice(len(views), 1000, replace=False)
    flat = views.reshape(-1, views.shape[-1])
    p_lat, p_def = [], []
    for i in ids:
        best = (flat @ views[i, 0]).reshape(views.shape[:2]).max(axis=1)
        best[i] = -np.inf
        got = np.argsort(-best)[:10]
        p_lat.append(np.mean(s["lattice"][got] == s["lattice"][i]))
        p_def.append(np.mean(s["defect"][got] == s["defect"][i]))
    abtem = [p for p in sorted(bench.ABTEM.glob("*.npy")) if not p.name.startswith("truth")]
    qa = np.stack([desc.embed_frame(np.load(p).astype(np.float32), 0.1) for p in abtem])
    if w is not None:
        qa = apply(qa, w)
    ab = []
    for qq in qa:
        best = (flat @ qq).reshape(views.shape[:2]).max(axis=1)
        ab.append(np.mean(s["lattice"][np.argsort(-best)[:10]] == "graphene"))
    return {
        "precision_at_10_lattice": float(np.mean(p_lat)),
        "precision_at_10_defect": float(np.mean(p_def)),
        "abtem_precision_at_10_graphene": float(np.mean(ab)),
    }


if __name__ == "__main__":
    main()
