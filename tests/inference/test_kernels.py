"""The check's compiled loops against the library calls they stand in for (scipy's KD-tree and
csgraph, numpy's sorts), on random point sets with edge cases (ties on a grid, collinear
points, points outside the frame)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from tasks.inference.kernels import kernels, nearest_within


def _points(rng: np.random.Generator, case: int) -> np.ndarray:
    n = int(rng.integers(2, 500))
    points = rng.random((n, 2)) * rng.uniform(5, 300, 2) - 20
    if case % 3 == 0:
        points = np.round(points)  # exact ties and duplicates
    if case % 5 == 0:
        points[:, 0] = 3.0  # collinear
    return points


@pytest.mark.parametrize("case", range(12))
def test_nearest_within_is_the_kd_tree_query(case: int) -> None:
    rng = np.random.default_rng(case)
    points = _points(rng, case)
    queries = rng.random((800, 2)) * 340 - 40
    radius = float(rng.uniform(0.3, 12))
    dist, index = nearest_within(points, queries, radius)
    ref_dist, ref_index = cKDTree(points).query(queries, distance_upper_bound=radius)
    assert np.array_equal(np.isfinite(dist), np.isfinite(ref_dist))
    hit = np.isfinite(dist)
    np.testing.assert_allclose(dist[hit], ref_dist[hit], rtol=1e-12)
    # Equidistant points may be named either way; the distance is the same.
    same = index[hit] == ref_index[hit]
    np.testing.assert_allclose(
        np.hypot(*(points[index[hit]][~same] - queries[hit][~same]).T), ref_dist[hit][~same], rtol=1e-12
    )
    assert (index[~hit] == len(points)).all()


@pytest.mark.parametrize("case", range(8))
def test_pairs_and_neighbours_are_the_kd_tree_ones(case: int) -> None:
    rng = np.random.default_rng(100 + case)
    points = _points(rng, case)
    integer = np.round(points).astype(np.int64)
    reach = int(rng.integers(1, 25))
    i, j = kernels().pairs_within(integer, reach)
    expected = cKDTree(integer).query_pairs(reach, p=np.inf)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == expected
    np.testing.assert_allclose(
        kernels().nearest_other(points), cKDTree(points).query(points, k=2)[0][:, 1], rtol=1e-12
    )


@pytest.mark.parametrize("case", range(8))
def test_groups_and_components_match_the_library(case: int) -> None:
    rng = np.random.default_rng(200 + case)
    points = _points(rng, case)
    tol = float(rng.uniform(0.5, 8))
    site = [-1] * len(points)
    sites = 0
    for a, ball in enumerate(cKDTree(points).query_ball_point(points, tol)):
        if site[a] < 0:
            for b in ball:
                if site[b] < 0:
                    site[b] = sites
            sites += 1
    assert np.array_equal(kernels().first_groups(points, tol), site)
    n = len(points)
    edges = rng.integers(0, n, (int(rng.integers(0, 2 * n)), 2))
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    assert np.array_equal(kernels().components(n, edges[:, 0].copy(), edges[:, 1].copy()), labels)


def test_ring_medians_are_the_sorted_middle_values() -> None:
    rng = np.random.default_rng(7)
    ring = rng.integers(0, 40, 5000)
    values = rng.exponential(size=5000)
    count, lower, upper = kernels().ring_medians(ring, values, 42)
    for r in range(42):
        part = np.sort(values[ring == r])
        assert count[r] == len(part)
        if len(part):
            assert lower[r] == part[(len(part) - 1) // 2] and upper[r] == part[len(part) // 2]
