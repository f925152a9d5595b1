"""Active learning: a GP over image patches, or physical laws competing, chooses where to measure next.

Plain Python, no Prefect: ``campaign_loop.run_campaign`` is the exploration loop (survey,
propose, measure, record, resume), which ``flows/explore.py`` wraps. The pieces compose as in gpytorch:
a ``PatchFeatureExtractor`` feeds a ``DKLModel`` that a ``GPSurrogate`` trains; a
``Campaign`` asks a ``Scorer`` (BoTorch's LogEI, PI, UCB, max-variance, Thompson, qLogEI,
qUCB) for batches; scalarizers turn measured spectra into the value maximised. Structured GPs
put physical laws into the mean (``structured``), and ``HypothesisCampaign`` lets several
compete.
"""

from .campaign import Campaign, Proposal
from .dkl_model import DKLModel
from .feature_extractor import PatchFeatureExtractor
from .patches import candidate_grid, extract_patches, standardise
from .scalarizers import BandIntensity, PeakPosition, PeakRatio, Scalarizer
from .scoring import SCORERS, CandidateModel, Scorer, make_scorer
from .surrogate import GPSurrogate

__all__ = [
    "SCORERS",
    "BandIntensity",
    "Campaign",
    "CandidateModel",
    "DKLModel",
    "GPSurrogate",
    "PatchFeatureExtractor",
    "PeakPosition",
    "PeakRatio",
    "Proposal",
    "Scalarizer",
    "Scorer",
    "candidate_grid",
    "extract_patches",
    "make_scorer",
    "standardise",
]
