"""Compiled loops of the frame check (numba): sums over each column's square of the frame.

The check's sums over a few hundred columns' squares (23² px each) were numpy expressions
that formed a (columns × pixels) temporary per sum, several MiB each; allocating and
filling them cost more than the arithmetic (h17s, 2026-11-30: ``joint_heights`` 10 ms a
256² frame, 1.7 ms of it in one gather). Here each sum is a loop over the squares that
keeps no temporary, with the GIL released, so that ``verify_many``'s threads run side by
side. The results are the numpy expressions' to floating-point round-off (the same sums in
the same order where the old code added with ``bincount``).

numba is imported on first use (it takes ~0.7 s), and each kernel is compiled once per
machine (``cache=True``: the machine code is kept beside this file's bytecode).
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np


@functools.cache
def kernels() -> SimpleNamespace:
    """The compiled kernels (compiled on first use, or loaded from numba's cache)."""
    from numba import njit

    jit = njit(cache=True, nogil=True, fastmath=False)

    @jit
    def square_dot(image, rows, cols, ar, ac):  # type: ignore[no-untyped-def]
        """Per square i: Σ_r Σ_c ar[i, r] · image[rows[i, r], cols[i, c]] · ac[i, c]."""
        m, side = ar.shape
        out = np.zeros(m)
        for i in range(m):
            total = 0.0
            for r in range(side):
                if ar[i, r] == 0.0:
                    continue
                row = rows[i, r]
                acc = 0.0
                for c in range(side):
                    acc += image[row, cols[i, c]] * ac[i, c]
                total += acc * ar[i, r]
            out[i] = total
        return out

    @jit
    def pair_overlaps(ar, ac, base, first, second):  # type: ignore[no-untyped-def]
        """Per pair (first[p], second[p]) of squares centred on the pixels ``base``: the sum over
        pixels of the product of their Gaussians (row profiles' overlap × column profiles')."""
        side = ar.shape[1]
        out = np.empty(len(first))
        for p in range(len(first)):
            i, j = first[p], second[p]
            dr = base[i, 0] - base[j, 0]
            dc = base[i, 1] - base[j, 1]
            sr = 0.0
            for t in range(max(0, -dr), min(side, side - dr)):
                sr += ar[i, t] * ar[j, t + dr]
            sc = 0.0
            for t in range(max(0, -dc), min(side, side - dc)):
                sc += ac[i, t] * ac[j, t + dc]
            out[p] = sr * sc
        return out

    @jit
    def along(profile, index, basis):  # type: ignore[no-untyped-def]
        """Per square i and basis function k: Σ_t profile[i, t] · basis[index[i, t], k]."""
        m, side = profile.shape
        k = basis.shape[1]
        out = np.zeros((m, k))
        for i in range(m):
            for t in range(side):
                v = profile[i, t]
                if v == 0.0:
                    continue
                row = index[i, t]
                for q in range(k):
                    out[i, q] += v * basis[row, q]
        return out

    @jit
    def paint(shape_h, shape_w, rows, cols, ar, ac, scale):  # type: ignore[no-untyped-def]
        """The frame (h, w) with each square's scale[i] · ar[i] ⊗ ac[i] added on its pixels."""
        out = np.zeros((shape_h, shape_w))
        m, side = ar.shape
        for i in range(m):
            for r in range(side):
                v = scale[i] * ar[i, r]
                row = rows[i, r]
                for c in range(side):
                    out[row, cols[i, c]] += v * ac[i, c]
        return out

    @jit
    def square_sums(values, rows, cols, in_r, in_c):  # type: ignore[no-untyped-def]
        """Per square i: the sum of ``values`` (h, w) over its pixels inside the frame."""
        m, side = rows.shape
        out = np.zeros(m)
        for i in range(m):
            total = 0.0
            for r in range(side):
                if not in_r[i, r]:
                    continue
                row = rows[i, r]
                for c in range(side):
                    if in_c[i, c]:
                        total += values[row, cols[i, c]]
            out[i] = total
        return out

    @jit
    def nearest_within(points, queries, radius):  # type: ignore[no-untyped-def]
        """Per query: distance to the nearest of ``points`` closer than ``radius`` and its index
        (inf and len(points) where none), as ``cKDTree.query(..., distance_upper_bound=radius)``.
        Points are binned into square cells of side ≥ ``radius`` (at most ~1024 a side): a
        point that close lies in one of the query's 3×3 cells."""
        n, q = len(points), len(queries)
        dist = np.full(q, np.inf)
        index = np.full(q, n, np.int64)
        if n == 0 or not radius > 0:
            return dist, index
        lo_r, lo_c = points[:, 0].min(), points[:, 1].min()
        extent = max(points[:, 0].max() - lo_r, points[:, 1].max() - lo_c)
        side = max(radius, extent / 1024.0)
        inv = 1.0 / side
        nr = np.int64((points[:, 0].max() - lo_r) * inv) + 1
        nc = np.int64((points[:, 1].max() - lo_c) * inv) + 1
        cell = np.empty(n, np.int64)
        start = np.zeros(nr * nc + 1, np.int64)
        for p in range(n):
            c = np.int64((points[p, 0] - lo_r) * inv) * nc + np.int64((points[p, 1] - lo_c) * inv)
            cell[p] = c
            start[c + 1] += 1
        for c in range(nr * nc):
            start[c + 1] += start[c]
        fill = start[:-1].copy()
        members = np.empty(n, np.int64)
        for p in range(n):  # in index order within a cell
            members[fill[cell[p]]] = p
            fill[cell[p]] += 1
        limit = radius * radius
        for t in range(q):
            qr, qc = queries[t, 0], queries[t, 1]
            if not (np.isfinite(qr) and np.isfinite(qc)):
                continue
            fr, fc = (qr - lo_r) * inv, (qc - lo_c) * inv
            if fr < -1.0 or fc < -1.0 or fr >= nr + 1.0 or fc >= nc + 1.0:
                continue
            kr, kc = np.int64(np.floor(fr)), np.int64(np.floor(fc))
            best = limit
            for r in range(max(kr - 1, 0), min(kr + 2, nr)):
                for c in range(max(kc - 1, 0), min(kc + 2, nc)):
                    k = r * nc + c
                    for a in range(start[k], start[k + 1]):
                        p = members[a]
                        d2 = (points[p, 0] - qr) ** 2 + (points[p, 1] - qc) ** 2
                        if d2 < best:
                            best = d2
                            index[t] = p
            if index[t] < n:
                dist[t] = np.sqrt(best)
        return dist, index

    return SimpleNamespace(
        square_dot=square_dot,
        pair_overlaps=pair_overlaps,
        along=along,
        paint=paint,
        square_sums=square_sums,
        nearest_within=nearest_within,
    )


def nearest_within(points: np.ndarray, queries: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Distance (px) from each of ``queries`` (q, 2) to its nearest of ``points`` (n, 2) closer
    than ``radius`` px, and that point's index; inf and n where none (``cKDTree.query`` with
    ``distance_upper_bound``, without building a tree: a few thousand queries a call, several
    calls a frame)."""
    p = np.ascontiguousarray(points, np.float64).reshape(-1, 2)
    q = np.ascontiguousarray(queries, np.float64).reshape(-1, 2)
    return kernels().nearest_within(p, q, float(radius))
