"""Columns measured on the input frame itself: position, height and their standard errors.

The network finds columns at its own scale (0.2 Å/px), and its offsets are only as good as
its training; a microscopist measures strain in picometres and asks whether a column is
there at all. So every column is measured again on the *original* frame:

- **Position** by matched filtering: the frame is correlated with a zero-mean Gaussian of
  the columns' width; for a Gaussian column of unknown height on a flat background in white
  noise the correlation's maximum is the maximum-likelihood position. A quadratic through
  the 3×3 neighbourhood of the maximum gives the sub-pixel position. (A joint
  Levenberg–Marquardt fit of overlapping Gaussians was tried first: its block iterations
  diverged where columns overlap strongly, graphene at 80 Å defocus; a free width per
  column traded off against height and background and made positions noisier.)
- **Height** above the background: the Gaussians of all columns and a smooth background fitted
  jointly over the frame by linear least squares (``joint_heights``; neighbours' tails overlap),
  with a standard error from the residuals near each column.
- **Position standard error** from the Fisher information of that column with the
  residuals' variance, and the **Cramér–Rao bound**: the least standard error any unbiased
  estimator reaches for a column of this height, width and background, when the variance is
  ``gain`` × signal (shot noise; gain ≈ 1 for detector counts), the gain measured from the
  frame's pixel-to-pixel differences.

The width is one per frame: the radial profile of the mean of all columns' squares, which
beats the noise of any single column.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from .kernels import kernels

# The position template's half-side as a fraction of the column spacing: the column's core.
# A larger template takes in the neighbours' peaks, which pull the maximum towards them.
POSITION_HALF_SIDE = 0.35


@dataclass(frozen=True)
class ColumnFit:
    """Measured columns of one frame; positions and lengths in px of the input frame.

    ``rowcol`` (n, 2) refined positions; ``sigma_rowcol`` (n, 2) their standard errors;
    ``crb`` (n,) the Cramér–Rao bound per axis (geometric mean of the two); ``amplitude``
    height above the ``background`` at the *starting* position (is a column there?),
    ``amplitude_se`` its standard error; ``width`` the columns' Gaussian standard deviation;
    ``gain`` the frame's noise variance per unit of signal (≈ 1 for counts, ≈ 0 noise-free).
    """

    rowcol: np.ndarray
    sigma_rowcol: np.ndarray
    crb: np.ndarray
    amplitude: np.ndarray
    amplitude_se: np.ndarray
    background: np.ndarray
    width: float
    gain: float
    # Positions (n, 2) px by Gauss–Newton against the joint model (``deblended_positions``).
    deblended: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))

    def __len__(self) -> int:
        return len(self.rowcol)

    @property
    def significance(self) -> np.ndarray:
        """Height in units of its standard error (how sure the data are that a peak is there)."""
        return self.amplitude / np.maximum(self.amplitude_se, 1e-30)

    @classmethod
    def empty(cls) -> ColumnFit:
        """No columns."""
        z = np.zeros(0, np.float32)
        zz = np.zeros((0, 2), np.float32)
        return cls(zz, zz, z, z, z, z, float("nan"), float("nan"))


def spacing(rowcol: np.ndarray) -> float:
    """Median nearest-neighbour distance of ``rowcol`` (px); NaN for fewer than two points."""
    if len(rowcol) < 2:
        return float("nan")
    return float(np.median(kernels().nearest_other(np.ascontiguousarray(rowcol, np.float64).reshape(-1, 2))))


def noise_gain(image: np.ndarray) -> float:
    """Noise variance per unit of signal, from second differences along rows and columns.

    A second difference cancels a signal smooth on the scale of a pixel (the columns are
    several px wide) and keeps 6× the per-pixel variance of independent noise; shot noise has
    variance gain × mean. Returns ~1 for raw counts, ~0 for noise-free images.
    """
    img = np.ascontiguousarray(image, np.float64)
    if min(img.shape) < 3:
        return float("nan")
    squares, mean = kernels().second_differences(img)
    if mean <= 0:
        return float("nan")
    return float(squares / 12.0 / mean)


def fit_columns(
    image: np.ndarray,
    rowcol: np.ndarray,
    separation: float | None = None,
    width: float | None = None,
    beyond: tuple[np.ndarray, np.ndarray] | None = None,
) -> ColumnFit:
    """Measure every column of ``image`` (H, W) near its starting position ``rowcol`` (n, 2) px.

    ``separation`` is the columns' typical nearest-neighbour distance in px (measured from
    the starting positions when not given); ``width`` their Gaussian standard deviation in px
    (measured on the frame when not given). A position moves at most a quarter of the
    separation from its start. ``beyond`` (centres (m, 2) px, species labels (m,)): columns
    outside the frame whose tails reach into it, one shared height per species
    (``joint_heights``).
    """
    img = np.asarray(image, np.float64)
    start = np.asarray(rowcol, np.float64).reshape(-1, 2)
    if len(start) == 0:
        return ColumnFit.empty()
    if separation is None or not np.isfinite(separation):
        separation = spacing(start)
    if not np.isfinite(separation):
        separation = 8.0  # one column alone: a few px around it
    core = int(np.clip(round(POSITION_HALF_SIDE * separation), 2, 32))
    if width is None:
        width = common_width(img, start, int(np.clip(round(0.5 * separation), 2, 32)))
    refined = _matched_peaks(img, start, width, core, 0.25 * separation)
    at_start = joint_heights(img, start, width, separation, beyond)
    deblended = deblended_positions(
        img, start, at_start["height"], at_start["model"], width, 0.25 * separation
    )
    gain = noise_gain(img)
    # The position's standard error (Fisher information with the residuals' variance) and the
    # Cramér–Rao bound, from a fit of height and level on each column's core at its peak.
    _, rows, cols, in_r, in_c = _square_axes(img.shape, refined, core)
    sigma, crb = kernels().peak_errors(
        np.ascontiguousarray(img), rows, cols, in_r, in_c, refined, float(width), gain if gain > 0 else 0.0
    )
    return ColumnFit(
        rowcol=refined.astype(np.float32),
        sigma_rowcol=sigma.astype(np.float32),
        crb=crb.astype(np.float32),
        amplitude=at_start["height"].astype(np.float32),
        amplitude_se=at_start["height_se"].astype(np.float32),
        background=at_start["background"].astype(np.float32),
        width=float(width),
        gain=gain,
        deblended=deblended.astype(np.float32),
    )


def joint_heights(
    image: np.ndarray,
    centres: np.ndarray,
    width: float,
    separation: float,
    beyond: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Heights of Gaussians of ``width`` px at fixed ``centres`` (n, 2), fitted jointly with a
    smooth background, by linear least squares over the whole frame.

    Every column's tails overlap its neighbours' (a light oxygen column between two heavy
    strontium ones reads as a saddle, not a peak, on its own), so all heights are solved
    together. The background is bilinear between knots two column spacings apart: it follows
    contamination and thickness, and is four spacings wide where it peaks, far too broad to
    take up a column. Standard errors come from the residual variance near each column.

    ``beyond`` (centres (m, 2) px outside the frame, labels (m,)): columns the frame cuts off,
    whose tails still fall inside it. Left out, those tails raise the heights of the columns
    and sites along the edge. Each one alone is seen too little to measure, so all columns of
    one label (a species) share one height.
    """
    h, w = image.shape
    n = len(centres)
    unknown = np.arange(n)  # the height each Gaussian's square belongs to
    if beyond is not None and len(beyond[0]):
        _, label = np.unique(np.asarray(beyond[1]), return_inverse=True)
        centres = np.concatenate([centres, np.asarray(beyond[0], np.float64).reshape(-1, 2)])
        unknown = np.concatenate([unknown, n + label.ravel()])
    heights = int(unknown.max(initial=-1)) + 1
    half = max(2, int(np.ceil(3.0 * width)))
    m = len(centres)
    # A Gaussian on a square clipped to the frame is the outer product of a row profile and a
    # column profile (each zero outside the frame): every product below is one of those, so no
    # (column × pixel) design is ever formed. ``rows``/``cols`` (m, side) are clipped indices.
    base, rows, cols, in_r, in_c = _square_axes(image.shape, centres, half)
    two_w2 = 2 * width * width
    ar = np.exp(-((rows - centres[:, :1]) ** 2) / two_w2) * in_r
    ac = np.exp(-((cols - centres[:, 1:]) ** 2) / two_w2) * in_c
    y = np.ascontiguousarray(image, np.float64)
    knot = max(4.0, 2.0 * separation)
    th, tw = _tents(h, knot), _tents(w, knot)
    kh, kw = th.shape[1], tw.shape[1]
    # The normal equations of [columns | tents] by blocks. Columns·columns: only squares within
    # 2·half px of each other on both axes overlap; the overlap of two outer products is the
    # product of their row profiles' overlap and their column profiles'. Columns·tents: the tents
    # are the Kronecker product of one tent basis per axis, so per column (Tₕᵀ a_r) ⊗ (T_wᵀ a_c);
    # tents·tents = (Tₕᵀ Tₕ) ⊗ (T_wᵀ T_w).
    # One BLAS thread: products and a solve of a few hundred unknowns gain little from more,
    # and where the inference's threads hold the other cores a second BLAS thread waits on
    # them (a 600-unknown Cholesky took 50 ms with two, 5.5 ms with one, machine loaded).
    with one_blas_thread():
        k = kernels()
        i, j = _overlapping(base, 2 * half)
        overlap = k.pair_overlaps(ar, ac, base, i, j)
        size = heights + kh * kw
        gram = np.bincount(
            np.concatenate(
                [unknown[i] * size + unknown[j], unknown[j] * size + unknown[i], unknown * (size + 1)]
            ),
            weights=np.concatenate([overlap, overlap, (ar * ar).sum(1) * (ac * ac).sum(1)]),
            minlength=size * size,
        ).reshape(size, size)
        # Tₕᵀ a_r and T_wᵀ a_c per square (a clipped square repeats the edge pixel, with zero weight).
        along_r = k.along(ar, rows, th)
        along_c = k.along(ac, cols, tw)
        cross = (along_r[:, :, None] * along_c[:, None, :]).reshape(m, kh * kw)
        own = k.square_dot(y, rows, cols, ar, ac)  # aᵣᵀ·Y·a_c per square
        if heights != m:  # squares sharing a height add up
            shared = np.zeros((heights - n, m - n))
            shared[unknown[n:] - n, np.arange(m - n)] = 1.0
            cross = np.concatenate([cross[:n], shared @ cross[n:]])
            own = np.bincount(unknown, weights=own, minlength=heights)
        gram[:heights, heights:] = cross
        gram[heights:, :heights] = cross.T
        tents = np.kron(th.T @ th, tw.T @ tw)
        gram[heights:, heights:] = tents
        rhs = np.concatenate([own, (th.T @ y @ tw).ravel()])
        # A tiny ridge keeps the system positive definite where a column sits on a knot's tent alone.
        gram[np.diag_indices_from(gram)] += 1e-9 * max(float(gram.diagonal().max()), 1e-30)
        # Each unknown couples only to its neighbours: ordered by row (a column's centre, a
        # tent's knot), the system is banded, but for the heights shared along the edges.
        key = np.concatenate(
            [centres[:n, 0], np.full(heights - n, np.nan), np.repeat(np.linspace(0, h - 1, kh), kw)]
        )
        coef = _solve_normal(gram, rhs, key)
        # The columns' model on the frame, square by square (a clipped square repeats the edge
        # pixel with zero weight: added, not assigned).
        model = k.paint(h, w, rows, cols, ar, ac, coef[unknown])
        smooth = th @ coef[heights:].reshape(kh, kw) @ tw.T
        resid = y - model - smooth
    ar, ac, centres = ar[:n], ac[:n], centres[:n]
    # Σ of the squared residual over each square's in-frame pixels.
    count = (in_r[:n].sum(1) * in_c[:n].sum(1)).astype(np.float64)
    local = k.square_sums(resid * resid, rows[:n], cols[:n], in_r[:n], in_c[:n]) / np.maximum(count - 1, 1)
    # The height's variance from its own square (height and local level), as if its neighbours
    # were known: the full inverse costs ~100× the solve for little change where columns
    # are resolved at all.
    sgg = (ar * ar).sum(1) * (ac * ac).sum(1)
    sg, s1 = ar.sum(1) * ac.sum(1), count
    inv_diag = s1 / np.maximum(sgg * s1 - sg * sg, 1e-30)
    background = smooth[
        np.clip(np.round(centres[:, 0]), 0, h - 1).astype(int),
        np.clip(np.round(centres[:, 1]), 0, w - 1).astype(int),
    ]
    return {
        "height": coef[:n],
        "height_se": np.sqrt(np.maximum(local * inv_diag, 0.0)),
        "background": background,
        "model": model + smooth,
    }


def _solve_normal(gram: np.ndarray, rhs: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Solution of the normal equations ``gram`` · x = ``rhs`` (positive definite, or least squares).

    Ordered by ``key`` (a position; NaN for the few unknowns coupled to many, kept aside), a
    system whose unknowns couple only to their neighbours is banded: a banded Cholesky, with
    the set-aside unknowns by their Schur complement, costs ~(band/size)² of the dense one
    (a frame of 510 unknowns, band 73: 2.7 → ~0.5 ms).
    """
    from scipy.linalg import LinAlgError, cho_factor, cho_solve, cho_solve_banded, cholesky_banded

    free = np.isfinite(key)
    main, aside = np.flatnonzero(free), np.flatnonzero(~free)
    order = main[np.argsort(key[main], kind="stable")]
    try:
        lower = kernels().lower_band(gram, order)
        if 4 * len(lower) > len(order):  # hardly banded: the dense factor is as quick
            return cho_solve(cho_factor(gram), rhs)
        factor = (cholesky_banded(lower, lower=True, check_finite=False), True)
        edge = gram[np.ix_(order, aside)]
        solved = cho_solve_banded(factor, np.column_stack([rhs[order], edge]), check_finite=False)
        x, through = solved[:, 0], solved[:, 1:]
        coef = np.empty(len(rhs))
        if len(aside):
            schur = gram[np.ix_(aside, aside)] - edge.T @ through
            coef[aside] = cho_solve(cho_factor(schur), rhs[aside] - edge.T @ x)
            x = x - through @ coef[aside]
        coef[order] = x
        return coef
    except LinAlgError:  # not positive definite in floating point: least squares instead
        return np.linalg.lstsq(gram, rhs, rcond=None)[0]


def _overlapping(base: np.ndarray, reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of integer square centres ``base`` (m, 2) px at most ``reach`` px apart on both axes."""
    return kernels().pairs_within(np.ascontiguousarray(base, np.int64), int(reach))


@functools.cache
def _blas():  # type: ignore[no-untyped-def]
    """The process's BLAS thread pools (inspected once, on first use: not at import)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def one_blas_thread():  # type: ignore[no-untyped-def]
    """A context in which BLAS runs on one thread. The limit is process-wide: callers that
    fit from several threads at once enter it once around them all, not once per thread (a
    thread leaving its own context would restore the limit under another's feet)."""
    return _blas().limit(limits=1, user_api="blas")


def _tents(length: int, knot: float) -> np.ndarray:
    """Bilinear interpolation weights (length × knots) of knots ``knot`` px apart spanning the axis."""
    k = max(2, int(np.ceil((length - 1) / knot)) + 1)
    pos = np.linspace(0, k - 1, length)
    i0 = np.minimum(np.floor(pos).astype(int), k - 2)
    f = pos - i0
    out = np.zeros((length, k))
    r = np.arange(length)
    out[r, i0] = 1 - f
    out[r, i0 + 1] = f
    return out


def _square_axes(shape: tuple[int, int], centres: np.ndarray, half: int) -> tuple[np.ndarray, ...]:
    """Per centre (n, 2) px: its pixel (n, 2), and the rows and columns (n, 2·half+1) of the
    square around that pixel, clipped to the frame, with whether each lies in the frame. A
    square is the outer product of its rows and its columns, and so is a Gaussian on it."""
    h, w = shape
    d = np.arange(-half, half + 1)
    base = np.round(centres).astype(np.int64)
    rows, cols = base[:, :1] + d, base[:, 1:] + d
    in_r, in_c = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
    return base, np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1), in_r, in_c


def common_width(image: np.ndarray, rowcol: np.ndarray, half: int) -> float:
    """The columns' Gaussian width (px): a fit to the radial profile of the mean column square.

    ``A·exp(−r²/2s²) + b`` is fitted for a grid of widths (linear in A and b for each); the
    profile is taken within ``half`` px, where the column dominates its neighbours.
    """
    _, rows, cols, in_r, in_c = _square_axes(image.shape, np.asarray(rowcol, np.float64), half)
    mean = kernels().square_mean(np.ascontiguousarray(image, np.float64), rows, cols, in_r, in_c).ravel()
    d = np.arange(-half, half + 1)
    r2 = (d[:, None] ** 2 + d[None, :] ** 2).ravel().astype(np.float64)
    keep = (r2 <= half * half) & np.isfinite(mean)
    r2, y = r2[keep], mean[keep]
    # The two-parameter least squares for all widths at once, in closed form (normal equations):
    # the design's columns are the Gaussian g and ones.
    s = np.geomspace(0.1 * half, 1.2 * half, 48)
    g = np.exp(-r2[None] / (2 * s[:, None] ** 2))  # (widths, pixels)
    k = float(len(y))
    sgg, sg, sgy, sy = (g * g).sum(1), g.sum(1), g @ y, y.sum()
    det = sgg * k - sg * sg
    amp = (k * sgy - sg * sy) / np.where(det > 0, det, 1.0)
    level = (sgg * sy - sg * sgy) / np.where(det > 0, det, 1.0)
    cost = ((amp[:, None] * g + level[:, None] - y[None]) ** 2).sum(1)
    ok = (det > 1e-12 * sgg * k) & (amp > 0)
    return float(s[ok][np.argmin(cost[ok])]) if ok.any() else 0.3 * half


def deblended_positions(
    image: np.ndarray,
    centres: np.ndarray,
    heights: np.ndarray,
    model: np.ndarray,
    width: float,
    max_shift: float,
    steps: int = 2,
) -> np.ndarray:
    """Positions (n, 2) px of Gaussian columns refined by Gauss–Newton on the frame's residual
    with every other column modelled (``model``: the frame's fitted model with the columns at
    ``centres`` of ``heights``, as ``joint_heights`` returns it).

    Each column's step uses its own square only, against the residual its neighbours leave:
    their overlap is in the model, not in the estimate (a matched filter alone is pulled
    towards a neighbour's tail). Columns of no positive height stay; a column moves at most
    ``max_shift`` px in all.
    """
    img = np.ascontiguousarray(image, np.float64)
    start = np.ascontiguousarray(np.asarray(centres, np.float64).reshape(-1, 2))
    amp = np.ascontiguousarray(heights, np.float64)
    # Two widths each side: over 90 % of a position's information (∝ G²·d²) lies there, in
    # under half the pixels of the three-width square the heights need.
    half = max(2, int(np.ceil(2.0 * width)))
    _, rows, cols, in_r, in_c = _square_axes(img.shape, start, half)
    # Each column's step against the same model; then the model moves with the columns.
    return kernels().gauss_newton(
        img,
        np.array(model, np.float64),
        rows,
        cols,
        in_r,
        in_c,
        start,
        amp,
        float(width),
        float(max_shift),
        steps,
    )


def _matched_peaks(
    image: np.ndarray, start: np.ndarray, width: float, half: int, max_shift: float
) -> np.ndarray:
    """Maxima of the frame correlated with a zero-mean Gaussian, near each start (px)."""
    side = 2 * half + 1
    h, w = image.shape
    reach = max(1, round(max_shift))
    # The correlation is needed only in a window of reach + 1 px around each start (the search
    # square and the 3×3 around its maximum): per column, the frame's patch under the window,
    # filtered by banded (Toeplitz) matrices, as ``gaussian_filter``/``uniform_filter`` with
    # mode "reflect" would over the whole frame. Correlation with (g − mean g) over the square
    # = Gaussian − mean(g) × box; both separable.
    d = np.arange(-half, half + 1)
    g1 = np.exp(-(d**2) / (2 * width * width))
    g_mean = (g1.sum() ** 2) / side**2
    span = np.arange(-(reach + 1 + half), reach + 1 + half + 1)  # the patch, window + filter
    base = np.round(start).astype(np.int64)
    p_rows, p_cols = _reflect(base[:, :1] + span, h), _reflect(base[:, 1:] + span, w)
    # The maximum within reach of the start, inside the frame; then the quadratic surface
    # through its 3×3 neighbourhood: the correlation is smooth on the scale of √2·width, so
    # its vertex is the sub-pixel maximum (a step of at most 1 px).
    return kernels().matched_peaks(
        np.ascontiguousarray(image, np.float64),
        base,
        p_rows,
        p_cols,
        g1,
        float(g_mean),
        int(reach),
        _quadratic_fit(),
        np.ascontiguousarray(start, np.float64),
        float(max_shift),
    )


@functools.cache
def _quadratic_fit() -> np.ndarray:
    """The least-squares map (6, 9) from a 3×3 neighbourhood's values (row-major, offsets −1..1)
    to the coefficients of 1, dr, dc, dr², dc², dr·dc."""
    o = np.array([-1, 0, 1])
    orr, occ = (a.ravel() for a in np.meshgrid(o, o, indexing="ij"))
    design = np.stack([np.ones(9), orr, occ, orr**2, occ**2, orr * occ], axis=1).astype(np.float64)
    out = np.linalg.pinv(design)
    out.flags.writeable = False
    return out


def _reflect(index: np.ndarray, length: int) -> np.ndarray:
    """Indices mirrored into [0, length) about the edges' half-pixels (scipy.ndimage's "reflect":
    d c b a | a b c d | d c b a), for overhangs shorter than ``length``."""
    index = np.where(index < 0, -index - 1, index)
    return np.where(index >= length, 2 * length - index - 1, index)
