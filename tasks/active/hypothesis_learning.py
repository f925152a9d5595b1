"""Hypothesis learning: several physical laws compete during one campaign.

Each hypothesis is a structured GP (``StructuredSurrogate``). At every step a policy picks
one hypothesis (softmax over the rewards so far, or ε-greedy); only that one is refitted,
and its posterior chooses the next measurement through a ``Scorer`` (Ziatdinov et al. 2022,
"Hypothesis learning in automated experiment"). The reward is held-out likelihood: before a
new measurement joins the data, every hypothesis predicts it (its posterior given all earlier
measurements), and its log predictive density is that hypothesis's reward. Summed over a
campaign these are the prequential log evidence (Dawid 1984), whose softmax gives the running
posterior weights. At the end every hypothesis is refitted on all the data and the weights
are the Laplace approximations of the evidence, with each law's fitted parameters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from scopeflow.errors import InputError

from .campaign import Proposal, predicted, skip_pending, unmeasured
from .scoring import Scorer
from .structured import Fit, Hypothesis, StructuredSurrogate

Policy = Literal["softmax", "egreedy"]


@dataclass
class HypothesisReport:
    """Where a campaign ended: posterior weight, fit and selection count per hypothesis."""

    names: list[str]
    weights: list[float]  # Laplace evidence, normalised (uniform prior over hypotheses)
    prequential_weights: list[float]  # from the rewards: softmax of summed log predictive densities
    fits: list[Fit]
    chosen_counts: list[int]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best(self) -> str:
        """The hypothesis with the highest posterior weight."""
        return self.names[int(np.argmax(self.weights))]

    def describe(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "best": self.best,
            "hypotheses": [
                {
                    "name": n,
                    "weight": w,
                    "prequential_weight": pw,
                    "chosen": c,
                    **f.describe(),
                }
                for n, w, pw, f, c in zip(
                    self.names,
                    self.weights,
                    self.prequential_weights,
                    self.fits,
                    self.chosen_counts,
                    strict=True,
                )
            ],
            "history": self.history,
        }


class HypothesisCampaign:
    """Measures where the currently favoured hypothesis is least sure, learning which law holds.

    ``positions`` (n, 2) Å are the candidates; ``temperature`` (nats per measurement) sets how
    sharply softmax favours the best mean reward; ``epsilon`` is ε-greedy's exploration rate.
    """

    def __init__(
        self,
        positions: np.ndarray,
        hypotheses: Sequence[Hypothesis],
        scorer: Scorer,
        *,
        policy: Policy = "softmax",
        temperature: float = 1.0,
        epsilon: float = 0.1,
        n_initial: int = 5,
        seed: int = 0,
        **surrogate_kw: Any,
    ) -> None:
        if policy not in ("softmax", "egreedy"):
            raise InputError(f"unknown policy {policy!r}; known: softmax, egreedy")
        if temperature <= 0 or not 0 <= epsilon <= 1:
            raise InputError(f"need temperature > 0 and 0 ≤ epsilon ≤ 1, got {temperature}, {epsilon}")
        if len(hypotheses) < 2:
            raise InputError("hypothesis learning needs ≥ 2 hypotheses")
        self.hypotheses = list(hypotheses)
        self.surrogates = [
            StructuredSurrogate(positions, h, seed=seed + i, **surrogate_kw) for i, h in enumerate(hypotheses)
        ]
        self.scorer = scorer
        self.policy, self.temperature, self.epsilon = policy, float(temperature), float(epsilon)
        self.n_initial = max(3, int(n_initial))
        self.rng = np.random.default_rng(seed)
        self.measured: list[int] = []
        self.values: list[float] = []
        self.pending: list[int] = []
        self.skipped: list[int] = []
        self.step = 0
        self.rewards: list[list[float]] = [[] for _ in hypotheses]
        self.chosen_counts = [0] * len(hypotheses)
        self.history: list[dict[str, Any]] = []
        self.last_choice: int | None = None
        self.noise_sd: list[float] = []

    @property
    def names(self) -> list[str]:
        """The hypotheses' names, in order."""
        return [h.name for h in self.hypotheses]

    @property
    def n_candidates(self) -> int:
        """Size of the candidate set."""
        return self.surrogates[0].n_candidates

    @property
    def best(self) -> float:
        """Largest value measured so far (−inf before any)."""
        return max(self.values, default=-np.inf)

    def weights(self) -> np.ndarray:
        """Running posterior weights: softmax of each hypothesis's summed log predictive density."""
        total = np.array([sum(r) for r in self.rewards], dtype=np.float64)
        return _softmax(total)

    def choose_hypothesis(self) -> int:
        """The policy's pick: which hypothesis is refitted and decides this step."""
        h = len(self.hypotheses)
        if not any(self.rewards):
            return int(self.rng.integers(h))
        mean = np.array([np.mean(r) if r else -np.inf for r in self.rewards])
        if self.policy == "egreedy":
            if self.rng.random() < self.epsilon:
                return int(self.rng.integers(h))
            return int(np.argmax(mean))
        return int(self.rng.choice(h, p=_softmax(mean / self.temperature)))

    def propose(self, k: int = 1) -> Proposal:
        """Choose ``k`` new candidates and mark them pending; ``how`` names scorer and hypothesis."""
        free = unmeasured(self.n_candidates, (self.measured, self.pending, self.skipped), k)
        fit_s = select_s = 0.0
        if len(self.measured) < self.n_initial:
            chosen = [int(i) for i in self.rng.choice(free, size=k, replace=False)]
            how, mean, std = "initial", [math.nan] * k, [math.nan] * k
        else:
            t0 = time.perf_counter()
            if all(s.model is None for s in self.surrogates):
                # The first decision fits every hypothesis once, so each can predict (be rewarded) from now on.
                for s in self.surrogates:
                    s.fit(self.measured, np.asarray(self.values), noise_sd=self.known_noise())
            h = self.choose_hypothesis()
            surrogate = self.surrogates[h]
            surrogate.fit(self.measured, np.asarray(self.values), noise_sd=self.known_noise())
            t1 = time.perf_counter()
            cm = surrogate.candidate_model()
            excluded = np.zeros(self.n_candidates, dtype=bool)
            excluded[np.asarray(self.measured + self.skipped, dtype=np.int64)] = True
            chosen = self.scorer.choose(
                cm, k, excluded=excluded, pending=self.pending, best=self.best, rng=self.rng
            )
            select_s = time.perf_counter() - t1
            fit_s = t1 - t0
            self.chosen_counts[h] += 1
            self.last_choice = h
            how = f"{self.scorer.name}:{self.hypotheses[h].name}"
            mean, std = predicted(cm, chosen)
        self.pending.extend(chosen)
        self.step += 1
        return Proposal(chosen, self.step, how, fit_s, select_s, mean, std)

    def known_noise(self) -> float | None:
        """Median measurement noise sd reported with the measurements so far (None if none was)."""
        return float(np.median(self.noise_sd)) if self.noise_sd else None

    def record(
        self, indices: Sequence[int], values: Sequence[float], noise_sd: Sequence[float] | None = None
    ) -> None:
        """Reward every fitted hypothesis by its log predictive density of the new values, then
        store them; ``noise_sd`` (per value, property units) is their counting noise if known."""
        if len(indices) != len(values):
            raise InputError(f"{len(indices)} indices but {len(values)} values")
        idx = [int(i) for i in indices]
        for i in idx:
            if i in self.measured:
                raise InputError(f"candidate {i} was already measured")
        y_new = np.asarray(values, dtype=np.float64)
        if len(self.measured) >= 2:
            for h, s in enumerate(self.surrogates):
                if s.model is None:
                    continue
                cm = s.candidate_model(self.measured, np.asarray(self.values))
                post = cm.posterior(cm.inputs[torch.as_tensor(idx)].unsqueeze(0), observation_noise=True)
                with torch.no_grad():
                    self.rewards[h].append(float(post.mvn.log_prob(torch.as_tensor(y_new).unsqueeze(0))))
        if noise_sd is not None:
            self.noise_sd.extend(float(v) for v in noise_sd)
        for i, v in zip(idx, y_new, strict=True):
            if i in self.pending:
                self.pending.remove(i)
            self.measured.append(i)
            self.values.append(float(v))
        if any(self.rewards):
            self.history.append(
                {
                    "n_measured": len(self.measured),
                    "chosen": None if self.last_choice is None else self.names[self.last_choice],
                    "weights": dict(zip(self.names, self.weights().round(4).tolist(), strict=True)),
                }
            )

    def restore(
        self, indices: Sequence[int], values: Sequence[float], *, skipped: Sequence[int] = (), step: int = 0
    ) -> None:
        """Take up a campaign where an earlier run left it (no rewards for the old measurements)."""
        for i, v in zip(indices, values, strict=True):
            self.measured.append(int(i))
            self.values.append(float(v))
        self.skip(skipped)
        self.step = max(self.step, int(step))

    def skip(self, indices: Sequence[int]) -> None:
        """Drop pending candidates without measuring them: never proposed again."""
        skip_pending(self.pending, self.skipped, indices)

    def leading(self) -> str:
        """The hypothesis with the highest running weight."""
        return self.names[int(np.argmax(self.weights()))]

    def finish(self) -> HypothesisReport:
        """Refit every hypothesis on all the data: Laplace-evidence weights and fitted parameters."""
        if len(self.measured) < 2:
            raise InputError("need ≥ 2 measurements to weigh hypotheses")
        fits = [
            s.fit(self.measured, np.asarray(self.values), noise_sd=self.known_noise())
            for s in self.surrogates
        ]
        weights = _softmax(np.array([f.log_evidence for f in fits]))
        return HypothesisReport(
            names=self.names,
            weights=weights.tolist(),
            prequential_weights=self.weights().tolist(),
            fits=fits,
            chosen_counts=list(self.chosen_counts),
            history=list(self.history),
        )


def _softmax(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    e = np.exp(v - v.max())
    return e / e.sum()
