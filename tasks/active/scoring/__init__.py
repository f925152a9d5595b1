"""Scoring candidates for the next measurement with BoTorch's acquisition functions.

Called "scoring" here because "acquisition" is the microscope's word (frames, spectra); in
Bayesian optimisation the same word names the function that ranks candidates. The functions
themselves are BoTorch's: LogEI, log-PI, UCB, posterior standard deviation (max-variance),
Thompson sampling (``MaxPosteriorSampling``), and the Monte-Carlo batch versions qLogEI and
qUCB, all evaluated over the discrete candidate set. What is ours is only what BoTorch does
not do: batches for the analytic functions (greedy "kriging believer", each pick added as a
fantasy observation at its posterior mean) and the exclusion of measured and skipped points.
"""

from .candidate_model import CandidateModel
from .scorer import SCORERS, Scorer, make_scorer

__all__ = ["SCORERS", "CandidateModel", "Scorer", "make_scorer"]
