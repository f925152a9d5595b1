"""Does a copy's own noise single out its source frame? A probe of a re-ranking score.

Run: ``PYTHONPATH=. nice -n 5 python benchmarks/similarity_fingerprint.py [--frames 1080
--queries 60 --rerank 50]`` (development twin by default: ``--seed 11 --twin-seed 2031``).
Updates ``--key`` in ``benchmarks/results/similarity.json``.

A copy is its source re-noised on top of the source's own counting noise, so at the exact pose
the two frames' departures from their lattice (the residual once the spectrum's periodic peaks
are removed, as ``similarity_constellation.distinctive_points`` does) correlate, by about
√(f/(1+f)) per pixel for a dose fraction f; any other frame's residual does not. The score: the
peak of the whitened (phase) correlation of the two residuals, in units of the correlation
surface's standard deviation, best over the poses tried — the rotation from Fourier–Mellin on
the whole frames (``rerank``) is only known up to the lattice's symmetry, so every multiple of
30° from it (six- and four-fold lattices both), with and without the mirror. Noise alone reaches
a z of ~5 over ~10⁴ shifts × 24 poses; the source, with ~10⁴ correlated pixels, far more.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import similarity as bench
from similarity_constellation import residual

from storage.federation.similarity.rerank import _angles, _window, match, prepare
from tasks.embedding import embed_frame

STEP_DEG = 30.0


def fingerprint(q_prep: Any, q_res: np.ndarray, c_prep: Any, c_res: np.ndarray) -> float:
    """Best whitened-correlation peak z of the query's residual on the candidate's."""
    spec_c = scipy.fft.fft2(c_res)
    n = min(q_res.shape[0], *c_res.shape)
    w = _window(n)
    best = 0.0
    for mirrored in (False, True):
        q = q_res[:, ::-1] if mirrored else q_res
        a0 = float(_angles(q_prep.spectra[int(mirrored)], c_prep.spectra[0])[0])
        for k in range(int(360 / STEP_DEG)):
            rot = ndimage.rotate(q, -(a0 + k * STEP_DEG), reshape=False, order=1, mode="constant")
            y0, x0 = (rot.shape[0] - n) // 2, (rot.shape[1] - n) // 2
            placed = np.zeros_like(c_res)
            placed[:n, :n] = rot[y0 : y0 + n, x0 : x0 + n] * w
            cross = spec_c * np.conj(scipy.fft.fft2(placed))
            corr = scipy.fft.ifft2(cross / (np.abs(cross) + 1e-12)).real
            best = max(best, float((corr.max() - corr.mean()) / (corr.std() + 1e-12)))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=1080)
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--drawn", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--twin-seed", type=int, default=2031)
    ap.add_argument("--rerank", type=int, default=50)
    ap.add_argument("--key", default="fingerprint_probe_dev")
    args = ap.parse_args()
    bench.SEED = args.twin_seed
    rng = np.random.default_rng(args.seed)
    qids = rng.choice(args.frames, min(args.drawn, args.frames), replace=False)
    per = int(np.ceil(args.frames / len(bench.COMBOS)))
    region, frames, sizes, emb, dose = [], [], [], [], []
    for r, _combo, twin in bench._region_twins(per, rng):
        for i in range(min(per, args.frames - len(frames))):
            f = twin.acquire(i)
            frames.append(f.image.astype(np.float32))
            sizes.append(f.pixel_size)
            region.append(r)
            dose.append(float(f.conditions["dose"]))
            emb.append(embed_frame(f.image, f.pixel_size))
    region_, emb_, dose_ = np.array(region), np.array(emb), np.array(dose)
    copies = [bench.transformed_copy(frames[i], sizes[i], rng) for i in qids]
    rows = []
    for n, qi in enumerate(qids[: args.queries]):
        copy, px = copies[n]
        top = np.argsort(-(emb_ @ embed_frame(copy, px)))[: args.rerank]
        t0 = time.perf_counter()
        qp = prepare(copy, px)
        qr = residual(qp.image)
        ncc, fp = [], []
        for c in top:
            cp = prepare(frames[c], sizes[c], mirror=False)
            ncc.append(match(qp, cp))
            fp.append(fingerprint(qp, qr, cp, residual(cp.image)))
        ncc_, fp_ = np.array(ncc), np.array(fp)
        is_src = top == qi
        own = region_[top] == region_[qi]
        row = {
            "dose": float(dose_[qi]),
            "source_candidate": bool(is_src.any()),
            "fp_source": float(fp_[is_src][0]) if is_src.any() else None,
            "fp_best_other_region": float(fp_[~own].max()) if (~own).any() else 0.0,
            "ncc_region_first": bool(own[int(np.argmax(ncc_))]),
            "fp_region_first": bool(own[int(np.argmax(fp_))]),
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        print(n, row, flush=True)
    src = [r for r in rows if r["source_candidate"]]
    out = {
        "archive_frames": len(frames),
        "queries": len(rows),
        "candidates": args.rerank,
        "twin_seed": args.twin_seed,
        "draw_seed": args.seed,
        "source_candidate": float(np.mean([r["source_candidate"] for r in rows])),
        "ncc_region_first": float(np.mean([r["ncc_region_first"] for r in rows])),
        "fingerprint_region_first": float(np.mean([r["fp_region_first"] for r in rows])),
        "fingerprint_region_first_where_source_candidate": float(
            np.mean([r["fp_region_first"] for r in src])
        ),
        "ncc_region_first_where_source_candidate": float(np.mean([r["ncc_region_first"] for r in src])),
        "fingerprint_z_source_median": float(np.median([r["fp_source"] for r in src])),
        "fingerprint_z_source_p5": float(np.percentile([r["fp_source"] for r in src], 5)),
        "fingerprint_z_other_regions_median": float(np.median([r["fp_best_other_region"] for r in rows])),
        "fingerprint_z_other_regions_p95": float(
            np.percentile([r["fp_best_other_region"] for r in rows], 95)
        ),
        "s_per_query_p50": float(np.median([r["seconds"] for r in rows])),
    }
    bench._update(args.key, out)


if __name__ == "__main__":
    main()
