"""The model registry: immutable, checksummed versions; ``production``/``candidate`` aliases."""

from .ensembles import KIND, load_ensemble, save_ensemble, ship_ensemble
from .registry import ALIASES, DEFAULT_MODELS_DIR, ModelRegistry

__all__ = [
    "ALIASES",
    "DEFAULT_MODELS_DIR",
    "KIND",
    "ModelRegistry",
    "load_ensemble",
    "save_ensemble",
    "ship_ensemble",
]
