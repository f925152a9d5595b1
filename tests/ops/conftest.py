"""Shared pieces of the operations tests: a tiny registered ensemble and a tiny twin dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from storage.datasets import DatasetWriter
from storage.models import ModelRegistry
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.inference.ensemble import Ensemble, EnsembleConfig
from tasks.inference.network import FusedUNet
from tasks.inference.registry import save_ensemble


@dataclass
class TinyModel:
    registry: Path
    version: str
    ensemble: Ensemble


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A seeded, untrained 2-member ensemble (it finds columns, just not good ones) in a temporary
    registry: re-analysis must reproduce in-process inference whatever the weights are."""
    torch.manual_seed(0)
    widths = (4, 8, 8)
    ensemble = Ensemble(
        FusedUNet(2, widths, 3), EnsembleConfig(members=2, widths=widths), device=torch.device("cpu")
    )
    root = tmp_path_factory.mktemp("registry")
    version = save_ensemble(ModelRegistry(root, fallback=None), ensemble)
    return TinyModel(root, version, ensemble)


def make_dataset(path: Path, frames: int = 5, shape: tuple[int, int] = (64, 64)) -> Path:
    """A twin run with ground truth and a defocus step at frame 3."""
    twin = DigitalTwin(3, DriftSchedule.parse("defocus=40@3"), shape)
    writer = DatasetWriter.open(path, twin.state())
    writer.append([twin.acquire(i) for i in range(frames)])
    return path
