"""Where scopeflow keeps its files when the user names no other place."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The scopeflow home directory: ``$SCOPEFLOW_HOME`` or ``./.scopeflow``."""
    return Path(os.environ.get("SCOPEFLOW_HOME", Path.cwd() / ".scopeflow")).resolve()


def default_dataset_dir() -> Path:
    """Directory holding the datasets of ``scopeflow run``."""
    return home() / "datasets"


def default_registry_dir() -> Path:
    """Directory of the local model registry (``$SCOPEFLOW_REGISTRY`` overrides)."""
    return Path(os.environ.get("SCOPEFLOW_REGISTRY", home() / "models")).resolve()


def default_store_dir() -> Path:
    """Directory of the embedded federated store (database and repository)."""
    return home() / "store"
