"""Acquisition functions: which candidate to measure next, from a posterior."""

from __future__ import annotations

from scopeflow.errors import InputError

from .base import AcquisitionFunction
from .expected_improvement import ExpectedImprovement
from .max_variance import MaxVariance
from .thompson_sampling import ThompsonSampling
from .upper_confidence_bound import UpperConfidenceBound

ACQUISITIONS = ("ei", "ucb", "maxvar", "thompson")


def make_acquisition(name: str, *, beta: float = 4.0, xi: float = 0.0) -> AcquisitionFunction:
    """The acquisition function called ``name`` (one of ``ACQUISITIONS``)."""
    if name == "ei":
        return ExpectedImprovement(xi=xi)
    if name == "ucb":
        return UpperConfidenceBound(beta=beta)
    if name == "maxvar":
        return MaxVariance()
    if name == "thompson":
        return ThompsonSampling()
    raise InputError(f"unknown acquisition function {name!r}; known: {', '.join(ACQUISITIONS)}")


__all__ = [
    "ACQUISITIONS",
    "AcquisitionFunction",
    "ExpectedImprovement",
    "MaxVariance",
    "ThompsonSampling",
    "UpperConfidenceBound",
    "make_acquisition",
]
