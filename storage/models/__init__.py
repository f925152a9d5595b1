"""The model registry: immutable, checksummed versions; ``production``/``candidate`` aliases.

The registry stores tensors and a JSON config; building an ensemble from them is
``tasks.inference.registry`` (storage does not import the tasks that use it).
"""

from .registry import ALIASES, DEFAULT_MODELS_DIR, ModelRegistry

__all__ = ["ALIASES", "DEFAULT_MODELS_DIR", "ModelRegistry"]
