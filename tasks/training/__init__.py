"""Training the edge ensemble on digital-twin data (simulation side: not imported at runtime)."""

from .conditions import ConditionRanges, sample_conditions
from .data import TrainingSet, make_training_set
from .train import TrainConfig, TrainResult, train_ensemble

__all__ = [
    "ConditionRanges",
    "TrainConfig",
    "TrainResult",
    "TrainingSet",
    "make_training_set",
    "sample_conditions",
    "train_ensemble",
]
