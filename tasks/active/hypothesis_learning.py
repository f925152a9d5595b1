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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from scopeflow.errors import InputError

from .campaign import CampaignBase
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


class HypothesisCampaign(CampaignBase):
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
        super().__init__(scorer, n_initial=max(3, int(n_initial)), seed=seed)
        self.hypotheses = list(hypotheses)
        self.surrogates = [
            StructuredSurrogate(positions, h, seed=seed + i, **surrogate_kw) for i, h in enumerate(hypotheses)
        ]
        self.policy, self.temperature, self.epsilon = policy, float(temperature), float(epsilon)
        self.rewards: list[list[float]] = [[] for _ in hypotheses]
        self.chosen_counts = [0] * len(hypotheses)
        self.history: list[dict[str, Any]] = []
        self.last_choice: int | None = None

    @property
    def names(self) -> list[str]:
        """The hypotheses' names, in order."""
        return [h.name for h in self.hypotheses]

    @property
    def n_candidates(self) -> int:
        """Size of the candidate set."""
        return self.surrogates[0].n_candidates

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

    def _fit(self) -> tuple[StructuredSurrogate, str]:
        """The policy's hypothesis, refitted; ``how`` names the scorer and the hypothesis."""
        first = all(s.model is None for s in self.surrogates)
        if first:
            # The first decision fits every hypothesis once, so each can predict (be rewarded) from now on.
            for s in self.surrogates:
                s.fit(self.measured, np.asarray(self.values), noise_sd=self.known_noise())
        h = self.choose_hypothesis()
        surrogate = self.surrogates[h]
        if not first:  # just fitted on these very data otherwise
            surrogate.fit(self.measured, np.asarray(self.values), noise_sd=self.known_noise())
        self.chosen_counts[h] += 1
        self.last_choice = h
        return surrogate, f"{self.scorer.name}:{self.hypotheses[h].name}"

    def record(
        self, indices: Sequence[int], values: Sequence[float], noise_sd: Sequence[float] | None = None
    ) -> None:
        """Reward every fitted hypothesis by its log predictive density of the new values, then
        store them; ``noise_sd`` (per value, property units) is their counting noise if known."""
        idx = self._check_new(indices, values)
        y_new = np.asarray(values, dtype=np.float64)
        if len(self.measured) >= 2:
            for h, s in enumerate(self.surrogates):
                if s.model is None:
                    continue
                cm = s.candidate_model(self.measured, np.asarray(self.values))
                post = cm.posterior(cm.inputs[torch.as_tensor(idx)].unsqueeze(0), observation_noise=True)
                with torch.no_grad():
                    self.rewards[h].append(float(post.mvn.log_prob(torch.as_tensor(y_new).unsqueeze(0))))
        self._store(idx, y_new.tolist(), noise_sd)
        if any(self.rewards):
            self.history.append(
                {
                    "n_measured": len(self.measured),
                    "chosen": None if self.last_choice is None else self.names[self.last_choice],
                    "weights": dict(zip(self.names, self.weights().round(4).tolist(), strict=True)),
                }
            )

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
