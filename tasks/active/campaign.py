"""One exploration campaign: what was measured, what is pending, and what to measure next."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from scopeflow.errors import InputError

from .scoring import CandidateModel, Scorer
from .surrogate import GPSurrogate


def unmeasured(n_candidates: int, taken: Sequence[Sequence[int]], k: int) -> np.ndarray:
    """Candidate indices in none of ``taken`` (measured, pending, skipped); at least ``k`` of them,
    or an ``InputError`` saying how many remain."""
    used = set().union(*map(set, taken))
    free = np.array([i for i in range(n_candidates) if i not in used], dtype=np.int64)
    if len(free) < k:
        raise InputError(f"asked for {k} new measurements but only {len(free)} unmeasured candidates remain")
    return free


@dataclass(frozen=True)
class Proposal:
    """Candidates chosen for measurement, how they were chosen, and what deciding cost (s)."""

    indices: list[int]
    step: int
    how: str  # the scorer's name, or "initial" for the seeding points
    fit_seconds: float
    select_seconds: float
    predicted_mean: list[float]
    predicted_std: list[float]

    @property
    def decision_seconds(self) -> float:
        """Wall time from the last measurement to this choice: fitting plus selection."""
        return self.fit_seconds + self.select_seconds


class CampaignBase:
    """What every campaign shares: measured, pending and skipped candidates, the values and their
    noise, the step count, and ``propose``'s shape (random seeding points, then fit and score).

    A subclass says how many candidates there are and, in ``_fit``, which surrogate decides
    this step (fitted on the measurements so far) and what to call the choice.
    """

    def __init__(self, scorer: Scorer, *, n_initial: int, seed: int) -> None:
        self.scorer = scorer
        self.n_initial = n_initial
        self.rng = np.random.default_rng(seed)
        self.measured: list[int] = []
        self.values: list[float] = []
        self.pending: list[int] = []
        self.skipped: list[int] = []
        self.noise_sd: list[float] = []
        self.step = 0

    @property
    def n_candidates(self) -> int:
        """Size of the candidate set."""
        raise NotImplementedError

    @property
    def best(self) -> float:
        """Largest value measured so far (−inf before any)."""
        return max(self.values, default=-np.inf)

    def _fit(self) -> tuple[Any, str]:
        """The surrogate that chooses this step, fitted (it has ``candidate_model()``), and ``how``."""
        raise NotImplementedError

    def propose(self, k: int = 1) -> Proposal:
        """Choose ``k`` new candidates and mark them pending."""
        free = unmeasured(self.n_candidates, (self.measured, self.pending, self.skipped), k)
        fit_s = select_s = 0.0
        if len(self.measured) < self.n_initial:
            chosen = [int(i) for i in self.rng.choice(free, size=k, replace=False)]
            how, mean, std = "initial", [float("nan")] * k, [float("nan")] * k
        else:
            t0 = time.perf_counter()
            surrogate, how = self._fit()
            t1 = time.perf_counter()
            cm = surrogate.candidate_model()
            excluded = np.zeros(self.n_candidates, dtype=bool)
            excluded[np.asarray(self.measured + self.skipped, dtype=np.int64)] = True
            chosen = self.scorer.choose(
                cm, k, excluded=excluded, pending=self.pending, best=self.best, rng=self.rng
            )
            select_s = time.perf_counter() - t1
            fit_s = t1 - t0
            mean, std = predicted(cm, chosen)
        self.pending.extend(chosen)
        self.step += 1
        return Proposal(chosen, self.step, how, fit_s, select_s, mean, std)

    def known_noise(self) -> float | None:
        """Median measurement noise sd reported with the measurements so far (None if none was)."""
        return float(np.median(self.noise_sd)) if self.noise_sd else None

    def _check_new(self, indices: Sequence[int], values: Sequence[float]) -> list[int]:
        """``indices`` as ints, once each is known to be unmeasured and matched by a value."""
        if len(indices) != len(values):
            raise InputError(f"{len(indices)} indices but {len(values)} values")
        idx = [int(i) for i in indices]
        for i in idx:
            if i in self.measured:
                raise InputError(f"candidate {i} was already measured")
        return idx

    def _store(
        self, indices: Sequence[int], values: Sequence[float], noise_sd: Sequence[float] | None = None
    ) -> None:
        """Store measured ``values`` at candidates ``indices`` (which stop being pending)."""
        idx = self._check_new(indices, values)
        if noise_sd is not None:
            self.noise_sd.extend(float(v) for v in noise_sd)
        for i, v in zip(idx, values, strict=True):
            if i in self.pending:
                self.pending.remove(i)
            self.measured.append(i)
            self.values.append(float(v))

    def restore(
        self, indices: Sequence[int], values: Sequence[float], *, skipped: Sequence[int] = (), step: int = 0
    ) -> None:
        """Take up a campaign where an earlier run left it: its measurements, skipped points and step."""
        self._store(indices, values)
        self.skip(skipped)
        self.step = max(self.step, int(step))

    def skip(self, indices: Sequence[int]) -> None:
        """Drop pending candidates without measuring them (a rejected batch): never proposed again."""
        for i in indices:
            i = int(i)
            if i in self.pending:
                self.pending.remove(i)
            if i not in self.skipped:
                self.skipped.append(i)


class Campaign(CampaignBase):
    """Drives a surrogate and a scorer (a BoTorch acquisition function) over a fixed candidate set.

    The first ``n_initial`` points are drawn at random (a GP needs something to fit); after
    that every ``propose`` refits the surrogate on all measurements and picks a batch that
    avoids measured and pending points. ``record`` turns pending points into measurements.
    """

    def __init__(
        self,
        surrogate: GPSurrogate,
        scorer: Scorer,
        *,
        n_initial: int = 5,
        seed: int = 0,
    ) -> None:
        super().__init__(scorer, n_initial=max(2, int(n_initial)), seed=seed)
        self.surrogate = surrogate

    @property
    def n_candidates(self) -> int:
        """Size of the candidate set."""
        return self.surrogate.n_candidates

    def _fit(self) -> tuple[GPSurrogate, str]:
        self.surrogate.fit(self.measured, np.asarray(self.values), noise_sd=self.known_noise())
        if self.surrogate.fallback is None:
            return self.surrogate, self.scorer.name
        # A deep model with its plain fallback: say which of the two chose (as hypotheses do).
        return self.surrogate, f"{self.scorer.name}:{self.surrogate.deciding}"

    def record(
        self, indices: Sequence[int], values: Sequence[float], noise_sd: Sequence[float] | None = None
    ) -> None:
        """Store measured ``values`` at candidates ``indices`` (which stop being pending);
        ``noise_sd`` (per value, the values' units) is their counting noise if known."""
        self._store(indices, values, noise_sd)


def predicted(cm: CandidateModel, indices: list[int]) -> tuple[list[float], list[float]]:
    """Posterior mean and standard deviation (the property's units) at candidates ``indices``."""
    idx = torch.as_tensor(indices, dtype=torch.long)
    mean = cm.mean[idx].double().numpy() * cm.y_std + cm.y_mean
    std = cm.variance[idx].sqrt().double().numpy() * cm.y_std
    return [float(v) for v in mean], [float(v) for v in std]
