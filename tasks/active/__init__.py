"""Active learning: deep kernel learning over image patches chooses where to measure next.

Plain Python, no Prefect: ``flows/explore.py`` wraps it. The pieces compose as in gpytorch:
a ``PatchFeatureExtractor`` feeds a ``DKLModel`` that a ``GPSurrogate`` trains; a
``Campaign`` asks an acquisition function (EI, UCB, max-variance, Thompson) for batches
through ``select_batch``; scalarizers turn measured spectra into the value maximised.
"""

from .acquisition import (
    ACQUISITIONS,
    AcquisitionFunction,
    ExpectedImprovement,
    MaxVariance,
    ThompsonSampling,
    UpperConfidenceBound,
    make_acquisition,
)
from .batch_selection import select_batch
from .campaign import Campaign, Proposal
from .dkl_model import DKLModel
from .feature_extractor import PatchFeatureExtractor
from .patches import candidate_grid, extract_patches, standardise
from .posterior import Posterior
from .scalarizers import BandIntensity, PeakPosition, PeakRatio, Scalarizer
from .surrogate import GPSurrogate

__all__ = [
    "ACQUISITIONS",
    "AcquisitionFunction",
    "BandIntensity",
    "Campaign",
    "DKLModel",
    "ExpectedImprovement",
    "GPSurrogate",
    "MaxVariance",
    "PatchFeatureExtractor",
    "PeakPosition",
    "PeakRatio",
    "Posterior",
    "Proposal",
    "Scalarizer",
    "ThompsonSampling",
    "UpperConfidenceBound",
    "candidate_grid",
    "extract_patches",
    "make_acquisition",
    "select_batch",
    "standardise",
]
