"""Choosing candidates with a BoTorch acquisition function over the discrete candidate set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from botorch.acquisition import (
    LogExpectedImprovement,
    PosteriorStandardDeviation,
    UpperConfidenceBound,
    qLogExpectedImprovement,
    qUpperConfidenceBound,
)
from botorch.acquisition.acquisition import AcquisitionFunction
from botorch.acquisition.analytic import LogProbabilityOfImprovement
from botorch.optim import optimize_acqf_discrete
from botorch.sampling import SobolQMCNormalSampler

from scopeflow.errors import InputError

from .candidate_model import CandidateModel

ANALYTIC = ("logei", "pi", "ucb", "maxvar")
BATCH = ("qlogei", "qucb")
SCORERS = (*ANALYTIC, "thompson", *BATCH)
ALIASES = {"ei": "logei"}  # the name the CLI used before: EI is now computed as log EI
# Candidates scored per call: a (chunk, 1, d) batch keeps memory flat at any grid size.
CHUNK = 1024
# Monte-Carlo samples of the q-batch functions; 128 quasi-random draws is BoTorch's default.
MC_SAMPLES = 128


@dataclass(frozen=True)
class Scorer:
    """Ranks candidates by BoTorch's acquisition function ``name`` (one of ``SCORERS``).

    ``beta`` is UCB's exploration weight (mean + sqrt(beta)·std, dimensionless).
    """

    name: str = "logei"
    beta: float = 4.0

    def __post_init__(self) -> None:
        if self.name not in SCORERS:
            raise InputError(f"unknown acquisition function {self.name!r}; known: {', '.join(SCORERS)}")
        if self.beta < 0:
            raise InputError(f"UCB needs beta ≥ 0, got {self.beta}")

    def choose(
        self,
        cm: CandidateModel,
        k: int,
        *,
        excluded: np.ndarray,
        pending: list[int],
        best: float,
        rng: np.random.Generator,
    ) -> list[int]:
        """``k`` distinct candidate indices, none ``excluded`` (bool mask) or ``pending``,
        best first; ``best`` is the largest value measured (the property's units)."""
        if k < 1:
            raise InputError(f"batch size must be ≥ 1, got {k}")
        excluded = np.asarray(excluded, dtype=bool).copy()
        excluded[np.asarray(pending, dtype=np.int64)] = True
        free = int((~excluded).sum())
        if free < k:
            raise InputError(f"asked for {k} new measurements but only {free} unmeasured candidates remain")
        best_f = cm.to_model_units(best) if np.isfinite(best) else -1e6
        seed = int(rng.integers(2**31))
        with torch.no_grad():
            if self.name in BATCH:
                return self._batch(cm, k, excluded, pending, best_f, seed)
            if self.name == "thompson":
                return self._thompson(cm, k, excluded, seed)
            return self._believer(cm, k, excluded, pending, best_f)

    def _analytic(self, cm: CandidateModel, best_f: float) -> AcquisitionFunction:
        if self.name == "logei":
            return LogExpectedImprovement(cm, best_f=best_f)
        if self.name == "pi":
            return LogProbabilityOfImprovement(cm, best_f=best_f)
        if self.name == "ucb":
            return UpperConfidenceBound(cm, beta=self.beta)
        return PosteriorStandardDeviation(cm)

    def _believer(
        self, cm: CandidateModel, k: int, excluded: np.ndarray, pending: list[int], best_f: float
    ) -> list[int]:
        # BoTorch's analytic functions score one point at a time and know nothing of pending
        # points: each pending point and each pick joins the model as a fantasy observation at
        # its posterior mean (Ginsbourger et al. 2010), so its neighbours' variance collapses.
        model = cm
        fantasy = list(pending)
        if fantasy:
            model = cm.conditioned(fantasy, _mean(cm, fantasy))
        chosen: list[int] = []
        for j in range(k):
            if j:
                model = cm.conditioned(fantasy, torch.cat([_mean(cm, pending), _mean(cm, chosen)]))
            scores = score_all(self._analytic(model, best_f), model.inputs)
            scores[torch.as_tensor(excluded)] = -torch.inf
            pick = int(torch.argmax(scores))
            if not torch.isfinite(scores[pick]):
                # Every free candidate scored -inf (LogEI far below the best): take the most uncertain.
                std = score_all(PosteriorStandardDeviation(model), model.inputs)
                std[torch.as_tensor(excluded)] = -torch.inf
                pick = int(torch.argmax(std))
            chosen.append(pick)
            excluded[pick] = True
            fantasy.append(pick)
        return chosen

    def _batch(
        self, cm: CandidateModel, k: int, excluded: np.ndarray, pending: list[int], best_f: float, seed: int
    ) -> list[int]:
        sampler = SobolQMCNormalSampler(sample_shape=torch.Size([MC_SAMPLES]), seed=seed)
        x_pending = cm.inputs[torch.as_tensor(pending, dtype=torch.long)] if pending else None
        acq: AcquisitionFunction
        if self.name == "qlogei":
            acq = qLogExpectedImprovement(cm, best_f=best_f, sampler=sampler, X_pending=x_pending)
        else:
            acq = qUpperConfidenceBound(cm, beta=self.beta, sampler=sampler, X_pending=x_pending)
        free = np.flatnonzero(~excluded)
        # Sequential greedy q-batch over the discrete set: BoTorch's own optimiser, joint MC
        # over the picks so far and the pending points.
        picked, _ = optimize_acqf_discrete(acq, q=k, choices=cm.inputs[torch.as_tensor(free)], unique=True)
        return [int(i) for i in picked[..., 0].round().long()]

    def _thompson(self, cm: CandidateModel, k: int, excluded: np.ndarray, seed: int) -> list[int]:
        # One joint posterior draw per pick (BoTorch's pathwise sampler); each pick is the
        # maximum of its draw among the candidates still free.
        draws = cm.sample_paths(k, seed)
        mask = torch.as_tensor(excluded).clone()
        chosen: list[int] = []
        for draw in draws:
            pick = int(torch.argmax(draw.masked_fill(mask, -torch.inf)))
            chosen.append(pick)
            mask[pick] = True
        return chosen


def make_scorer(name: str, *, beta: float = 4.0) -> Scorer:
    """The scorer called ``name`` (one of ``SCORERS``, or ``ei`` for ``logei``)."""
    return Scorer(ALIASES.get(name, name), beta=beta)


def score_all(acq: AcquisitionFunction, inputs: torch.Tensor) -> torch.Tensor:
    """The acquisition value of every candidate alone, (n,), in chunks of ``CHUNK``."""
    with torch.no_grad():
        return torch.cat([acq(inputs[i : i + CHUNK].unsqueeze(1)) for i in range(0, len(inputs), CHUNK)])


def _mean(cm: CandidateModel, indices: list[int]) -> torch.Tensor:
    return cm.mean[torch.as_tensor(indices, dtype=torch.long)]
