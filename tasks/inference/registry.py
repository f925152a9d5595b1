"""Ensembles in the model registry: save a trained ``Ensemble`` as a version, load one back.

``storage.models.ModelRegistry`` keeps tensors and configs; the ensemble is built here.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from scopeflow.errors import InputError
from storage.models.registry import DEFAULT_MODELS_DIR, ModelRegistry

from .ensemble import Ensemble, EnsembleConfig, default_device

KIND = "scopeflow.fused-unet-ensemble"


def save_ensemble(
    registry: ModelRegistry,
    ensemble: Ensemble,
    *,
    lineage: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    parent: str | None = None,
) -> str:
    """Register ``ensemble`` as a new version (its ``version`` is updated); returns the version."""
    version = registry.register(
        ensemble.tensors(),
        ensemble.config.as_dict(),
        kind=KIND,
        lineage=lineage,
        metrics=metrics,
        parent=parent,
    )
    ensemble.version = version
    return version


def ship_ensemble(
    ensemble: Ensemble,
    *,
    lineage: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    parent: str | None = None,
    shipped: Path = DEFAULT_MODELS_DIR,
) -> str:
    """Add ``ensemble`` to the shipped versions (``storage/default_models``) as the next version;
    returns it. Numbered after the versions already shipped, which stay (lineage)."""
    with tempfile.TemporaryDirectory() as tmp:
        # A registry whose fallback is the shipped directory numbers after what it holds.
        staging = ModelRegistry(tmp, fallback=shipped)
        version = save_ensemble(staging, ensemble, lineage=lineage, metrics=metrics, parent=parent)
        shipped.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging.versions_dir / version, shipped / version)
    return version


def load_ensemble(
    ref: str = "production",
    registry: ModelRegistry | None = None,
    device: torch.device | None = None,
) -> Ensemble:
    """The ensemble ``ref`` names (alias, version or ``default``), checksum-verified, ready to run.

    ``production`` falls back to the ensemble shipped in ``storage/default_models`` when the
    registry has none promoted, so inference works on a fresh clone.
    """
    registry = registry or ModelRegistry()
    tensors, manifest = registry.load(ref)
    if manifest.get("kind") != KIND:
        raise InputError(
            f"model {manifest['version']} is a {manifest.get('kind')!r}, not an ensemble ({KIND})"
        )
    config = EnsembleConfig.from_dict(manifest["config"])
    return Ensemble.from_tensors(tensors, config, manifest["version"], device or default_device())
