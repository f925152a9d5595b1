"""Choosing a batch of measurements at once, with points already sent but not yet measured."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from scopeflow.errors import InputError

from .acquisition import AcquisitionFunction
from .posterior import Posterior


class ConditionableSurrogate(Protocol):
    """A fitted surrogate that can add fantasy observations to its posterior."""

    @property
    def n_candidates(self) -> int: ...

    def posterior(self, condition: Sequence[int] = (), values: Sequence[float] = ()) -> Posterior: ...


def select_batch(
    surrogate: ConditionableSurrogate,
    acquisition: AcquisitionFunction,
    k: int,
    *,
    measured: Sequence[int],
    pending: Sequence[int] = (),
    best: float,
    rng: np.random.Generator,
) -> list[int]:
    """``k`` distinct candidate indices, none measured or pending, best-scoring first.

    Greedy "kriging believer" batches (Ginsbourger et al. 2010): each pick, and every pending
    point, is added to the GP as a fantasy observation at its posterior mean, so the variance
    around it collapses and the next pick goes elsewhere instead of next door.
    """
    if k < 1:
        raise InputError(f"batch size must be ≥ 1, got {k}")
    n = surrogate.n_candidates
    excluded = np.zeros(n, dtype=bool)
    excluded[np.asarray(measured, dtype=np.int64)] = True
    excluded[np.asarray(pending, dtype=np.int64)] = True
    free = int((~excluded).sum())
    if free < k:
        raise InputError(f"asked for {k} new measurements but only {free} unmeasured candidates remain")
    posterior = surrogate.posterior()
    fantasy_idx = [int(i) for i in pending]
    fantasy_y = [float(posterior.mean[i]) for i in fantasy_idx]
    if fantasy_idx:
        posterior = surrogate.posterior(fantasy_idx, fantasy_y)
    chosen: list[int] = []
    for j in range(k):
        if j:
            posterior = surrogate.posterior(fantasy_idx, fantasy_y)
        scores = np.asarray(acquisition(posterior, best, rng), dtype=np.float64)
        scores = np.where(np.isnan(scores), -np.inf, scores)
        scores[excluded] = -np.inf
        pick = int(np.argmax(scores))
        if not np.isfinite(scores[pick]):
            # Every free candidate scored -inf or NaN: fall back to the most uncertain one.
            pick = int(np.argmax(np.where(excluded, -np.inf, posterior.variance)))
        chosen.append(pick)
        excluded[pick] = True
        fantasy_idx.append(pick)
        fantasy_y.append(float(posterior.mean[pick]))
    return chosen
