"""Edge inference: the fused ensemble atom finder, its decoding, and the classical baseline."""

from .baseline import ClassicalFinder
from .ensemble import Ensemble, EnsembleConfig, Maps, default_device
from .metrics import MATCH_DISTANCE, Scores, evaluate, match
from .network import FusedUNet
from .resample import MAX_PIXEL_SIZE, MIN_PIXEL_SIZE, Scaling, scaling_for

__all__ = [
    "MATCH_DISTANCE",
    "MAX_PIXEL_SIZE",
    "MIN_PIXEL_SIZE",
    "ClassicalFinder",
    "Ensemble",
    "EnsembleConfig",
    "FusedUNet",
    "Maps",
    "Scaling",
    "Scores",
    "default_device",
    "evaluate",
    "match",
    "scaling_for",
]
