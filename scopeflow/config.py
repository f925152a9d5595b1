"""Where scopeflow keeps its files when the user names no other place."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "SCOPEFLOW_HOME"


def home() -> Path:
    """The scopeflow home directory: ``$SCOPEFLOW_HOME``, else the user's data directory
    (platformdirs: ``~/.local/share/scopeflow`` on Linux), never the current directory, so
    every command finds the same models, datasets and Prefect database wherever it runs."""
    configured = os.environ.get(HOME_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir("scopeflow", appauthor=False)).resolve()


def home_source() -> str:
    """How ``home()`` was chosen, for the line every command prints."""
    return f"${HOME_ENV}" if os.environ.get(HOME_ENV) else "the user's data directory"


def default_dataset_dir() -> Path:
    """Directory holding the datasets of ``scopeflow run``."""
    return home() / "datasets"


def default_registry_dir() -> Path:
    """Directory of the local model registry (``$SCOPEFLOW_REGISTRY`` overrides)."""
    return Path(os.environ.get("SCOPEFLOW_REGISTRY", home() / "models")).resolve()


def default_store_dir() -> Path:
    """Directory of the embedded federated store (database and repository)."""
    return home() / "store"
