"""One version number names one model, whichever registry (local or shipped) holds it."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from storage.models import DEFAULT_MODELS_DIR, ModelRegistry
from tasks.inference.ensemble import Ensemble, EnsembleConfig
from tasks.inference.network import FusedUNet
from tasks.inference.registry import save_ensemble


def test_local_versions_are_numbered_after_the_shipped_ones(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")  # the shipped ensembles as fallback
    shipped = registry.versions()
    assert shipped, f"no shipped ensemble in {DEFAULT_MODELS_DIR}"
    torch.manual_seed(0)
    ensemble = Ensemble(FusedUNet(2, (4, 8, 8)), EnsembleConfig(members=2, widths=(4, 8, 8)))
    version = save_ensemble(registry, ensemble)
    numbers = [re.match(r"v(\d+)-", v).group(1) for v in registry.versions()]  # type: ignore[union-attr]
    assert len(numbers) == len(set(numbers)), registry.versions()
    assert int(version[1:5]) == 1 + max(int(v[1:5]) for v in shipped)
