"""The frame check's fits, computed the fast way (separable profiles, banded filters, normal
equations by blocks), agree with the same estimators written out directly: a dense design
matrix, whole-frame filters, one column at a time."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter

from tasks.inference.refine import _matched_peaks, _tents, deblended_positions, joint_heights

WIDTH = 1.7


def _frame(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 40 × 52 px frame of Gaussian columns on a tilted lattice (some cut by the edges) on a
    sloped background with shot noise; the columns inside and just outside it."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.mgrid[-2:10, -2:12], -1).reshape(-1, 2).astype(float)
    centres = grid @ np.array([[5.9, 0.8], [-0.7, 5.3]]) + rng.uniform(-0.3, 0.3, grid.shape)
    r, c = np.mgrid[0:40, 0:52]
    truth = (
        30.0
        + 0.2 * r
        + sum(
            rng.uniform(60, 120) * np.exp(-((r - a) ** 2 + (c - b) ** 2) / (2 * WIDTH**2)) for a, b in centres
        )
    )
    image = rng.poisson(truth).astype(np.float64)
    inside = ((centres >= 0) & (centres <= [39, 51])).all(1)
    near = ~inside & ((centres > -4) & (centres < [43, 55])).all(1)
    return image, centres[inside], centres[near]


def _column(shape: tuple[int, int], centre: np.ndarray, half: int) -> np.ndarray:
    """One Gaussian of WIDTH on the square of half-side ``half`` around its rounded centre, on the frame."""
    r, c = np.mgrid[0 : shape[0], 0 : shape[1]]
    base = np.round(centre)
    on = (np.abs(r - base[0]) <= half) & (np.abs(c - base[1]) <= half)
    return np.exp(-((r - centre[0]) ** 2 + (c - centre[1]) ** 2) / (2 * WIDTH**2)) * on


def test_joint_heights_are_the_dense_least_squares_solution() -> None:
    image, centres, beyond = _frame()
    labels = np.arange(len(beyond)) % 2  # two shared heights
    fast = joint_heights(image, centres, WIDTH, 6.0, (beyond, labels))
    half = int(np.ceil(3 * WIDTH))
    columns = [_column(image.shape, x, half).ravel() for x in centres]
    shared = [sum(_column(image.shape, x, half) for x in beyond[labels == k]).ravel() for k in (0, 1)]
    knot = max(4.0, 2.0 * 6.0)
    tents = np.kron(_tents(image.shape[0], knot), _tents(image.shape[1], knot))
    design = np.column_stack([*columns, *shared, tents])
    coef = np.linalg.lstsq(design, image.ravel(), rcond=None)[0]
    n = len(centres)
    np.testing.assert_allclose(fast["height"], coef[:n], rtol=1e-7, atol=1e-7 * np.abs(coef[:n]).max())
    fitted = design @ coef
    np.testing.assert_allclose(fast["model"].ravel(), fitted, atol=1e-7 * fitted.max())
    # The residual variance over each column's in-frame square, as the standard error uses it.
    resid = (image.ravel() - fitted).reshape(image.shape)
    for i, x in enumerate(centres):
        on = _column(image.shape, x, half) > 0
        g = _column(image.shape, x, half)[on]
        var = (resid[on] ** 2).sum() / (on.sum() - 1)
        se = np.sqrt(var * on.sum() / (on.sum() * (g * g).sum() - g.sum() ** 2))
        assert abs(fast["height_se"][i] - se) < 1e-6 * se


def test_deblended_positions_are_gauss_newton_column_by_column() -> None:
    image, centres, _ = _frame(5)
    start = centres + 0.4  # off the true centres, so that the steps are not small
    fit = joint_heights(image, start, WIDTH, 6.0)
    fast = deblended_positions(image, start, fit["height"], fit["model"], WIDTH, 1.5)
    half = int(np.ceil(2 * WIDTH))
    r, c = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    model, pos = fit["model"].copy(), start.copy()
    for step in range(2):
        new = pos.copy()
        for i, (a, x) in enumerate(zip(fit["height"], pos, strict=True)):
            base = np.round(start[i])
            on = (np.abs(r - base[0]) <= half) & (np.abs(c - base[1]) <= half)
            g = np.exp(-((r[on] - x[0]) ** 2 + (c[on] - x[1]) ** 2) / (2 * WIDTH**2))
            jac = np.stack([a * g * (r[on] - x[0]), a * g * (c[on] - x[1])], 1) / WIDTH**2
            move = np.linalg.solve(jac.T @ jac, jac.T @ (image[on] - model[on])) if a > 0 else 0.0
            new[i] = start[i] + np.clip(x + move - start[i], -1.5, 1.5)
        if step == 0:  # the model follows the columns' first step
            for a, first, old, moved in zip(fit["height"], start, pos, new, strict=True):
                base = np.round(first)
                on = (np.abs(r - base[0]) <= half) & (np.abs(c - base[1]) <= half)
                for x, sign in ((moved, 1), (old, -1)):
                    model[on] += (
                        sign * a * np.exp(-((r[on] - x[0]) ** 2 + (c[on] - x[1]) ** 2) / (2 * WIDTH**2))
                    )
        pos = new
    np.testing.assert_allclose(fast, pos, atol=1e-9)


def test_matched_peaks_are_the_whole_frame_correlation_maxima() -> None:
    image, centres, _ = _frame(7)
    start = centres + np.array([0.6, -0.8])
    half, shift = 3, 2.0
    fast = _matched_peaks(image, start, WIDTH, half, shift)
    d = np.arange(-half, half + 1)
    g1 = np.exp(-(d**2) / (2 * WIDTH**2))
    side = 2 * half + 1
    corr = gaussian_filter(image, WIDTH, mode="reflect", truncate=half / WIDTH) * g1.sum() ** 2
    corr -= (g1.sum() ** 2 / side**2) * uniform_filter(image, side, mode="reflect") * side**2
    h, w = image.shape
    for x, found in zip(start, fast, strict=True):
        base = np.round(x).astype(int)
        rows, cols = np.meshgrid(base[0] + np.arange(-2, 3), base[1] + np.arange(-2, 3), indexing="ij")
        ok = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        values = np.where(ok, corr[rows.clip(0, h - 1), cols.clip(0, w - 1)], -np.inf)
        peak = np.clip(np.unravel_index(values.argmax(), values.shape) + base - 2, 1, [h - 2, w - 2])
        z = corr[peak[0] - 1 : peak[0] + 2, peak[1] - 1 : peak[1] + 2]
        # The vertex of the quadratic through the 3×3 neighbourhood (least squares).
        o = np.array([-1.0, 0.0, 1.0])
        orr, occ = (a.ravel() for a in np.meshgrid(o, o, indexing="ij"))
        k = np.linalg.lstsq(np.stack([np.ones(9), orr, occ, orr**2, occ**2, orr * occ], 1), z.ravel())[0]
        hess = np.array([[2 * k[3], k[5]], [k[5], 2 * k[4]]])
        vertex = -np.linalg.solve(hess, k[1:3]) if hess[0, 0] < 0 and np.linalg.det(hess) > 0 else np.zeros(2)
        expected = x + np.clip(peak + np.clip(vertex, -1, 1) - x, -shift, shift)
        np.testing.assert_allclose(found, expected, atol=1e-9)
