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

    @jit
    def gauss_newton(image, model, rows, cols, in_r, in_c, start, amp, width, max_shift, steps):  # type: ignore[no-untyped-def]
        """``refine.deblended_positions``' steps: per column, a Gauss–Newton step of its centre on
        its square's residual (``image`` − ``model``), all columns against the same model; the
        model then moved with them (``model`` is changed in place)."""
        n, side = rows.shape
        two_w2 = 2.0 * width * width
        pos = start.copy()
        new = start.copy()
        er = np.empty((n, side))
        ec = np.empty((n, side))
        for i in range(n):
            for t in range(side):
                er[i, t] = np.exp(-((rows[i, t] - pos[i, 0]) ** 2) / two_w2) if in_r[i, t] else 0.0
                ec[i, t] = np.exp(-((cols[i, t] - pos[i, 1]) ** 2) / two_w2) if in_c[i, t] else 0.0
        along0 = np.empty(side)
        along1 = np.empty(side)
        for step_number in range(steps):
            for i in range(n):
                k = amp[i] / (width * width)
                s_rr = s_ee_c = s_ee_r = s_cc = s_rdr = s_cdc = 0.0
                for t in range(side):
                    dr = rows[i, t] - pos[i, 0]
                    dc = cols[i, t] - pos[i, 1]
                    s_rr += (er[i, t] * dr) ** 2
                    s_ee_r += er[i, t] * er[i, t]
                    s_rdr += er[i, t] * er[i, t] * dr
                    s_cc += (ec[i, t] * dc) ** 2
                    s_ee_c += ec[i, t] * ec[i, t]
                    s_cdc += ec[i, t] * ec[i, t] * dc
                a_rr = k * k * s_rr * s_ee_c
                a_cc = k * k * s_ee_r * s_cc
                a_rc = k * k * s_rdr * s_cdc
                for r in range(side):
                    acc0 = 0.0
                    acc1 = 0.0
                    row = rows[i, r]
                    for c in range(side):
                        v = image[row, cols[i, c]] - model[row, cols[i, c]]
                        acc0 += v * ec[i, c]
                        acc1 += v * ec[i, c] * (cols[i, c] - pos[i, 1])
                    along0[r] = acc0
                    along1[r] = acc1
                b_r = 0.0
                b_c = 0.0
                for r in range(side):
                    b_r += er[i, r] * (rows[i, r] - pos[i, 0]) * along0[r]
                    b_c += er[i, r] * along1[r]
                b_r *= k
                b_c *= k
                det = a_rr * a_cc - a_rc * a_rc
                step_r = step_c = 0.0
                if amp[i] > 0 and det > 1e-12 * max(a_rr * a_cc, 1e-300):
                    step_r = (a_cc * b_r - a_rc * b_c) / det
                    step_c = (a_rr * b_c - a_rc * b_r) / det
                new[i, 0] = start[i, 0] + min(max(pos[i, 0] + step_r - start[i, 0], -max_shift), max_shift)
                new[i, 1] = start[i, 1] + min(max(pos[i, 1] + step_c - start[i, 1], -max_shift), max_shift)
            if step_number == steps - 1:
                return new
            for i in range(n):  # the model follows the columns
                for t in range(side):
                    er_t = np.exp(-((rows[i, t] - new[i, 0]) ** 2) / two_w2) if in_r[i, t] else 0.0
                    ec_t = np.exp(-((cols[i, t] - new[i, 1]) ** 2) / two_w2) if in_c[i, t] else 0.0
                    along0[t] = er_t
                    along1[t] = ec_t
                for r in range(side):
                    for c in range(side):
                        model[rows[i, r], cols[i, c]] += amp[i] * (
                            along0[r] * along1[c] - er[i, r] * ec[i, c]
                        )
                for t in range(side):
                    er[i, t] = along0[t]
                    ec[i, t] = along1[t]
            pos[:] = new
        return pos

    @jit
    def ring_medians(ring, values, rings):  # type: ignore[no-untyped-def]
        """Per ring 0..rings−1: how many ``values`` fall in it, and their lower and upper median
        (the middle two of its sorted values; the same one for an odd count)."""
        count = np.zeros(rings, np.int64)
        for t in range(len(ring)):
            count[ring[t]] += 1
        start = np.zeros(rings + 1, np.int64)
        for r in range(rings):
            start[r + 1] = start[r] + count[r]
        fill = start[:-1].copy()
        grouped = np.empty(len(values))
        for t in range(len(ring)):
            grouped[fill[ring[t]]] = values[t]
            fill[ring[t]] += 1
        lower = np.zeros(rings)
        upper = np.zeros(rings)
        for r in range(rings):
            if count[r] == 0:
                continue
            lo, hi = (count[r] - 1) // 2, count[r] // 2
            part = np.partition(grouped[start[r] : start[r + 1]], lo)  # a selection, not a sort
            lower[r] = part[lo]
            upper[r] = part[lo] if hi == lo else part[hi:].min()
        return count, lower, upper

    @jit
    def components(n, source, target):  # type: ignore[no-untyped-def]
        """Connected components of n nodes joined by the edges (source[e], target[e]): labels
        0, 1, ... in the order of each component's lowest node."""
        parent = np.arange(n)
        for e in range(len(source)):
            a, b = source[e], target[e]
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            while parent[b] != b:
                parent[b] = parent[parent[b]]
                b = parent[b]
            if a != b:
                if a < b:
                    parent[b] = a
                else:
                    parent[a] = b
        labels = np.empty(n, np.int64)
        next_label = 0
        for v in range(n):
            root = v
            while parent[root] != root:
                root = parent[root]
            if root == v:
                labels[v] = next_label
                next_label += 1
            else:
                labels[v] = labels[root]
        return labels

    @jit
    def pairs_within(points, reach):  # type: ignore[no-untyped-def]
        """Pairs (i < j) of integer points (n, 2) at most ``reach`` apart on both axes, found
        through cells of side reach + 1 (such a pair lies in neighbouring cells)."""
        n = len(points)
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        side = reach + 1
        lo_r, lo_c = points[:, 0].min(), points[:, 1].min()
        nr = (points[:, 0].max() - lo_r) // side + 1
        nc = (points[:, 1].max() - lo_c) // side + 1
        cell = (points[:, 0] - lo_r) // side * nc + (points[:, 1] - lo_c) // side
        start = np.zeros(nr * nc + 1, np.int64)
        for p in range(n):
            start[cell[p] + 1] += 1
        for c in range(nr * nc):
            start[c + 1] += start[c]
        fill = start[:-1].copy()
        members = np.empty(n, np.int64)
        for p in range(n):
            members[fill[cell[p]]] = p
            fill[cell[p]] += 1
        out_i = np.empty(0, np.int64)
        out_j = np.empty(0, np.int64)
        for sweep in range(2):  # count, then fill
            found = 0
            for i in range(n):
                cr, cc = cell[i] // nc, cell[i] % nc
                for r in range(max(cr - 1, 0), min(cr + 2, nr)):
                    for c in range(max(cc - 1, 0), min(cc + 2, nc)):
                        k = r * nc + c
                        for a in range(start[k], start[k + 1]):
                            j = members[a]
                            if (
                                j > i
                                and abs(points[j, 0] - points[i, 0]) <= reach
                                and abs(points[j, 1] - points[i, 1]) <= reach
                            ):
                                if sweep == 1:
                                    out_i[found] = i
                                    out_j[found] = j
                                found += 1
            if sweep == 0:
                out_i = np.empty(found, np.int64)
                out_j = np.empty(found, np.int64)
        return out_i, out_j

    @jit
    def lower_band(matrix, order):  # type: ignore[no-untyped-def]
        """``matrix`` (symmetric) with rows and columns in ``order``: its lower band in LAPACK's
        storage (band + 1, n), ab[d, j] = M[j + d, j], the band as narrow as its nonzeros allow."""
        n = len(order)
        band = 0
        for a in range(n):
            row = order[a]
            for b in range(0, a - band):
                if matrix[row, order[b]] != 0.0:
                    band = a - b
                    break
        out = np.zeros((band + 1, n))
        for j in range(n):
            col = order[j]
            for d in range(min(band + 1, n - j)):
                out[d, j] = matrix[order[j + d], col]
        return out

    @jit
    def periodic_power(spectrum, row_jump, col_jump, phase_h, phase_w, denominator):  # type: ignore[no-untyped-def]
        """|F − S|² on the ``rfft2`` grid, S the transform of the smooth component that carries
        the frame's edge jumps (``lattice.periodic_power``): S = (R[kx]·(1 − e^{2πi ky/h}) +
        C[ky]·(1 − e^{2πi kx/w})) / λ(ky, kx), zero at k = 0 along with the mean."""
        h, w = spectrum.shape
        out = np.empty((h, w))
        for a in range(h):
            for b in range(w):
                smooth = (row_jump[b] * (1 - phase_h[a]) + col_jump[a] * (1 - phase_w[b])) / denominator[a, b]
                v = spectrum[a, b] - smooth
                out[a, b] = v.real * v.real + v.imag * v.imag
        out[0, 0] = 0.0
        return out

    @jit
    def first_groups(points, radius):  # type: ignore[no-untyped-def]
        """Group of each point (n, 2): in index order, a point not yet grouped starts a group
        that every ungrouped point within ``radius`` (inclusive) of it joins."""
        n = len(points)
        group = np.full(n, -1, np.int64)
        if n == 0:
            return group
        lo_r, lo_c = points[:, 0].min(), points[:, 1].min()
        side = max(radius, 1e-12, max(points[:, 0].max() - lo_r, points[:, 1].max() - lo_c) / 1024.0)
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
        for p in range(n):
            members[fill[cell[p]]] = p
            fill[cell[p]] += 1
        limit = radius * radius
        groups = 0
        for i in range(n):
            if group[i] >= 0:
                continue
            kr, kc = cell[i] // nc, cell[i] % nc
            for r in range(max(kr - 1, 0), min(kr + 2, nr)):
                for c in range(max(kc - 1, 0), min(kc + 2, nc)):
                    k = r * nc + c
                    for a in range(start[k], start[k + 1]):
                        j = members[a]
                        if group[j] < 0:
                            d2 = (points[j, 0] - points[i, 0]) ** 2 + (points[j, 1] - points[i, 1]) ** 2
                            if d2 <= limit:
                                group[j] = groups
            groups += 1
        return group

    @jit
    def matched_peaks(image, base, p_rows, p_cols, g1, g_mean, reach, fit, start, max_shift):  # type: ignore[no-untyped-def]
        """``refine._matched_peaks`` per column: the patch (rows ``p_rows``, columns ``p_cols`` of
        ``image``) correlated with the zero-mean Gaussian (separably: ``g1`` along each axis, less
        ``g_mean`` × the box), its maximum within ``reach`` px of ``base`` in the frame, and the
        vertex of the quadratic through the 3×3 around it (``fit``: the 6×9 least-squares map)."""
        h, w = image.shape
        n, span = p_rows.shape
        side = len(g1)
        window = span - side + 1
        inner = 2 * reach + 1
        out = np.empty((n, 2))
        tmp_g = np.empty((span, window))
        tmp_1 = np.empty((span, window))
        corr = np.empty((window, window))
        z = np.empty(9)
        for i in range(n):
            for s in range(span):
                row = p_rows[i, s]
                for b in range(window):
                    acc_g = 0.0
                    acc_1 = 0.0
                    for t in range(side):
                        v = image[row, p_cols[i, b + t]]
                        acc_g += g1[t] * v
                        acc_1 += v
                    tmp_g[s, b] = acc_g
                    tmp_1[s, b] = acc_1
            for a in range(window):
                for b in range(window):
                    acc_g = 0.0
                    acc_1 = 0.0
                    for t in range(side):
                        acc_g += g1[t] * tmp_g[a + t, b]
                        acc_1 += tmp_1[a + t, b]
                    corr[a, b] = acc_g - g_mean * acc_1
            best = -np.inf
            best_r, best_c = 0, 0
            for a in range(inner):
                r = base[i, 0] + a - reach
                if r < 0 or r >= h:
                    continue
                for b in range(inner):
                    c = base[i, 1] + b - reach
                    if c < 0 or c >= w:
                        continue
                    if corr[a + 1, b + 1] > best:
                        best = corr[a + 1, b + 1]
                        best_r, best_c = a, b
            peak_r = min(max(base[i, 0] + best_r - reach, 1), h - 2)
            peak_c = min(max(base[i, 1] + best_c - reach, 1), w - 2)
            local_r = min(max(peak_r - base[i, 0] + reach + 1, 1), window - 2)
            local_c = min(max(peak_c - base[i, 1] + reach + 1, 1), window - 2)
            q = 0
            for dr in range(-1, 2):
                for dc in range(-1, 2):
                    z[q] = corr[local_r + dr, local_c + dc]
                    q += 1
            k = fit @ z
            qa, qb, qc = 2 * k[3], k[5], 2 * k[4]
            det = qa * qc - qb * qb
            step_r = step_c = 0.0
            if qa < 0 and det > 0:
                step_r = -(qc * k[1] - qb * k[2]) / det
                step_c = -(qa * k[2] - qb * k[1]) / det
            rr = peak_r + min(max(step_r, -1.0), 1.0)
            cc = peak_c + min(max(step_c, -1.0), 1.0)
            out[i, 0] = start[i, 0] + min(max(rr - start[i, 0], -max_shift), max_shift)
            out[i, 1] = start[i, 1] + min(max(cc - start[i, 1], -max_shift), max_shift)
        return out

    @jit
    def peak_errors(image, rows, cols, in_r, in_c, centres, width, gain):  # type: ignore[no-untyped-def]
        """Per column: ``A·g + b`` fitted on its square at the fixed centre (g the Gaussian of
        ``width``), the centre's standard error per axis from the residuals' variance, and the
        Cramér–Rao bound for variance ``gain`` × model (NaN where the gain is not positive)."""
        n, side = rows.shape
        s2 = width * width
        sigma = np.empty((n, 2))
        crb = np.full(n, np.nan)
        g = np.empty((side, side))
        for i in range(n):
            sgg = sg = s1 = sgy = sy = 0.0
            for r in range(side):
                ur = rows[i, r] - centres[i, 0]
                for c in range(side):
                    uc = cols[i, c] - centres[i, 1]
                    g[r, c] = np.exp(-(ur * ur + uc * uc) / (2 * s2))
                    if in_r[i, r] and in_c[i, c]:
                        y = image[rows[i, r], cols[i, c]]
                        sgg += g[r, c] * g[r, c]
                        sg += g[r, c]
                        s1 += 1.0
                        sgy += g[r, c] * y
                        sy += y
            det = max(sgg * s1 - sg * sg, 1e-30)
            height = (s1 * sgy - sg * sy) / det
            background = (sgg * sy - sg * sgy) / det
            var = info_r = info_c = fisher_r = fisher_c = 0.0
            for r in range(side):
                if not in_r[i, r]:
                    continue
                ur = rows[i, r] - centres[i, 0]
                for c in range(side):
                    if not in_c[i, c]:
                        continue
                    uc = cols[i, c] - centres[i, 1]
                    model = height * g[r, c] + background
                    e = image[rows[i, r], cols[i, c]] - model
                    var += e * e
                    dgr = height * g[r, c] * ur / s2
                    dgc = height * g[r, c] * uc / s2
                    fisher_r += dgr * dgr
                    fisher_c += dgc * dgc
                    if gain > 0:
                        weight = 1.0 / (gain * max(model, 1e-12))
                        info_r += dgr * dgr * weight
                        info_c += dgc * dgc * weight
            var /= max(s1 - 4, 1.0)  # height, background, row, col
            sigma[i, 0] = np.sqrt(var / max(fisher_r, 1e-30))
            sigma[i, 1] = np.sqrt(var / max(fisher_c, 1e-30))
            if gain > 0:
                crb[i] = (max(info_r, 1e-30) * max(info_c, 1e-30)) ** -0.25
        return sigma, crb

    @jit
    def square_mean(image, rows, cols, in_r, in_c):  # type: ignore[no-untyped-def]
        """The mean over squares (rows, cols (n, side)) of the frame's values at each offset, over
        the squares that hold it in the frame (NaN where none does)."""
        n, side = rows.shape
        total = np.zeros((side, side))
        count = np.zeros((side, side))
        for i in range(n):
            for r in range(side):
                if not in_r[i, r]:
                    continue
                for c in range(side):
                    if in_c[i, c]:
                        total[r, c] += image[rows[i, r], cols[i, c]]
                        count[r, c] += 1.0
        out = np.empty((side, side))
        for r in range(side):
            for c in range(side):
                out[r, c] = total[r, c] / count[r, c] if count[r, c] > 0 else np.nan
        return out

    @jit
    def second_differences(image):  # type: ignore[no-untyped-def]
        """Mean of the squared second differences along rows plus along columns, and the mean
        of the frame clipped at 0."""
        h, w = image.shape
        rows = cols = positive = 0.0
        for a in range(h):
            for b in range(w):
                v = image[a, b]
                positive += max(v, 0.0)
                if 0 < a < h - 1:
                    d = image[a - 1, b] - 2 * v + image[a + 1, b]
                    rows += d * d
                if 0 < b < w - 1:
                    d = image[a, b - 1] - 2 * v + image[a, b + 1]
                    cols += d * d
        return rows / ((h - 2) * w) + cols / (h * (w - 2)), positive / (h * w)

    @jit
    def nearest_other(points):  # type: ignore[no-untyped-def]
        """Per point (n ≥ 2, 2): the distance to its nearest other point. Cells of about the mean
        spacing, searched ring by ring until no nearer point can lie beyond."""
        n = len(points)
        lo_r, lo_c = points[:, 0].min(), points[:, 1].min()
        ext_r, ext_c = points[:, 0].max() - lo_r, points[:, 1].max() - lo_c
        side = max(np.sqrt(max(ext_r * ext_c, ext_r * ext_r, ext_c * ext_c, 1e-24) / n), 1e-12)
        side = max(side, max(ext_r, ext_c) / 1024.0)
        inv = 1.0 / side
        nr = np.int64(ext_r * inv) + 1
        nc = np.int64(ext_c * inv) + 1
        cell_r = np.empty(n, np.int64)
        cell_c = np.empty(n, np.int64)
        start = np.zeros(nr * nc + 1, np.int64)
        for p in range(n):
            cell_r[p] = np.int64((points[p, 0] - lo_r) * inv)
            cell_c[p] = np.int64((points[p, 1] - lo_c) * inv)
            start[cell_r[p] * nc + cell_c[p] + 1] += 1
        for c in range(nr * nc):
            start[c + 1] += start[c]
        fill = start[:-1].copy()
        members = np.empty(n, np.int64)
        for p in range(n):
            c = cell_r[p] * nc + cell_c[p]
            members[fill[c]] = p
            fill[c] += 1
        out = np.empty(n)
        for i in range(n):
            best = np.inf
            q = 0
            while True:
                for r in range(cell_r[i] - q, cell_r[i] + q + 1):
                    if r < 0 or r >= nr:
                        continue
                    edge_row = r == cell_r[i] - q or r == cell_r[i] + q
                    for c in range(cell_c[i] - q, cell_c[i] + q + 1):
                        if c < 0 or c >= nc or not (edge_row or c == cell_c[i] - q or c == cell_c[i] + q):
                            continue
                        k = r * nc + c
                        for a in range(start[k], start[k + 1]):
                            j = members[a]
                            if j != i:
                                d2 = (points[j, 0] - points[i, 0]) ** 2 + (points[j, 1] - points[i, 1]) ** 2
                                if d2 < best:
                                    best = d2
                if best <= (q * side) ** 2 or (q > nr and q > nc):
                    break
                q += 1
            out[i] = np.sqrt(best)
        return out

    @jit
    def merge_peaks(k, order, most):  # type: ignore[no-untyped-def]
        """Peaks ``k`` (p, 2) taken in ``order``, each kept unless within 2 coefficients (on both
        axes) of one kept already or of its mirror image; at most ``most``."""
        kept = np.zeros((most, 2))
        count = 0
        for i in order:
            apart = True
            for q in range(count):
                if (
                    max(abs(k[i, 0] - kept[q, 0]), abs(k[i, 1] - kept[q, 1])) <= 2
                    or max(abs(k[i, 0] + kept[q, 0]), abs(k[i, 1] + kept[q, 1])) <= 2
                ):
                    apart = False
                    break
            if apart:
                kept[count] = k[i]
                count += 1
                if count == most:
                    break
        return kept[:count].copy()

    @jit
    def centroids(ratio, peaks):  # type: ignore[no-untyped-def]
        """``lattice._centroids``: each peak at the centroid of its 3×3 excess (ratio − 1 ≥ 0)."""
        h, w = ratio.shape
        out = peaks.copy()
        for i in range(len(peaks)):
            r, c = np.int64(np.rint(peaks[i, 0])), np.int64(np.rint(peaks[i, 1]))
            total = along_r = along_c = 0.0
            for dr in range(-1, 2):
                for dc in range(-1, 2):
                    col = c + dc
                    if col < 0 or col >= w:
                        continue
                    v = max(ratio[(r + dr) % h, col] - 1.0, 0.0)
                    total += v
                    along_r += v * (r + dr)
                    along_c += v * col
            if total > 0:
                out[i, 0] = along_r / total
                out[i, 1] = along_c / total
        return out

    @jit
    def prior_fraction(llr, iterations, lo, hi):  # type: ignore[no-untyped-def]
        """EM for the share of sites holding a column (``verify._log_prior_odds``): the mean
        posterior under the current share, ``iterations`` times, kept within [lo, hi]."""
        pi = 0.5
        for _ in range(iterations):
            shift = np.log(pi / (1 - pi))
            total = 0.0
            for v in llr:
                x = v + shift
                total += 1.0 / (1.0 + np.exp(-x)) if x >= 0 else np.exp(x) / (1.0 + np.exp(x))
            pi = min(max(total / len(llr), lo), hi)
        return pi

    return SimpleNamespace(
        prior_fraction=prior_fraction,
        merge_peaks=merge_peaks,
        centroids=centroids,
        nearest_other=nearest_other,
        peak_errors=peak_errors,
        square_mean=square_mean,
        second_differences=second_differences,
        matched_peaks=matched_peaks,
        first_groups=first_groups,
        periodic_power=periodic_power,
        pairs_within=pairs_within,
        lower_band=lower_band,
        ring_medians=ring_medians,
        components=components,
        gauss_newton=gauss_newton,
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
