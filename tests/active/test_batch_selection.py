"""Batches are distinct, skip measured and pending points, and spread out."""

from __future__ import annotations

import numpy as np
import pytest

from scopeflow.errors import InputError
from tasks.active import Campaign, GPSurrogate, make_acquisition, select_batch


def surrogate_on_a_line(n: int = 60) -> tuple[GPSurrogate, np.ndarray]:
    # A 1-D "patch" (its position): the plain GP then is an ordinary GP on a line.
    x = np.linspace(0, 1, n)[:, None].astype(np.float32)
    s = GPSurrogate.plain(x, first_iters=30)
    measured = np.array([0, n // 2, n - 1])
    s.fit(measured, np.sin(6 * x[measured, 0]))
    s.model.covar_module.base_kernel.lengthscale = 0.08  # fix it: the test is about selection
    return s, measured


@pytest.mark.parametrize("name", ["ei", "ucb", "maxvar", "thompson"])
def test_batch_is_distinct_and_new(name: str) -> None:
    s, measured = surrogate_on_a_line()
    pending = [10, 11]
    batch = select_batch(
        s,
        make_acquisition(name),
        8,
        measured=measured,
        pending=pending,
        best=1.0,
        rng=np.random.default_rng(0),
    )
    assert len(batch) == len(set(batch)) == 8
    assert not set(batch) & (set(measured) | set(pending))


def test_max_variance_batch_spreads_out() -> None:
    s, measured = surrogate_on_a_line()
    batch = select_batch(
        s, make_acquisition("maxvar"), 4, measured=measured, best=0.0, rng=np.random.default_rng(0)
    )
    gaps = np.diff(np.sort(batch))
    assert gaps.min() >= 5  # fantasies collapse the variance around each pick


def test_too_large_a_batch_is_refused() -> None:
    s, measured = surrogate_on_a_line(n=5)
    with pytest.raises(InputError, match="only 2 unmeasured"):
        select_batch(s, make_acquisition("ei"), 3, measured=measured, best=0.0, rng=np.random.default_rng(0))


def test_campaign_never_proposes_a_point_twice() -> None:
    x = np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32)
    c = Campaign(
        GPSurrogate.plain(x, first_iters=10, warm_iters=3), make_acquisition("ucb"), n_initial=4, seed=0
    )
    seen: list[int] = []
    for _ in range(6):
        p = c.propose(3)
        seen += p.indices
        if p.step % 2:
            c.record(p.indices, x[p.indices, 0])
        else:
            c.skip(p.indices)
    assert len(seen) == len(set(seen)) == 18
    with pytest.raises(InputError, match="already measured"):
        c.record([c.measured[0]], [0.0])
