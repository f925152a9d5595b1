"""The model registry: immutable checksummed versions, atomic promotion and rollback."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from scopeflow.errors import IntegrityError, NotFoundError
from storage.models import ModelRegistry
from storage.models.registry import WEIGHTS
from tasks.inference.ensemble import Ensemble, EnsembleConfig
from tasks.inference.network import FusedUNet
from tasks.inference.registry import load_ensemble, save_ensemble


def tiny_ensemble(seed: int) -> Ensemble:
    torch.manual_seed(seed)
    cfg = EnsembleConfig(members=2, widths=(4, 8, 8))
    return Ensemble(FusedUNet(2, (4, 8, 8)), cfg, device=torch.device("cpu"))


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry", fallback=None)


def test_versions_round_trip_with_manifest(registry: ModelRegistry) -> None:
    ens = tiny_ensemble(0)
    version = save_ensemble(registry, ens, lineage={"data": "twin"}, metrics={"f1": 0.99})
    assert version.startswith("v0001-")
    loaded = load_ensemble(version, registry, device=torch.device("cpu"))
    assert loaded.version == version
    for name, value in ens.tensors().items():
        assert torch.equal(loaded.tensors()[name], value)
    manifest = registry.manifest(version)
    assert manifest["lineage"] == {"data": "twin"}
    assert manifest["metrics"] == {"f1": 0.99}
    assert len(manifest["weights"]["sha256"]) == 64
    assert save_ensemble(registry, tiny_ensemble(1)).startswith("v0002-")


def test_unknown_versions_and_unset_aliases_are_not_found(registry: ModelRegistry) -> None:
    with pytest.raises(NotFoundError, match="unknown model version"):
        registry.load("v9999-deadbeef")
    with pytest.raises(NotFoundError):
        registry.load("candidate")
    with pytest.raises(NotFoundError, match="no default model"):
        registry.load("production")


def test_corrupted_weights_are_refused(registry: ModelRegistry) -> None:
    version = save_ensemble(registry, tiny_ensemble(0))
    weights = registry.versions_dir / version / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="corrupted"):
        load_ensemble(version, registry)
    with pytest.raises(IntegrityError):
        registry.promote(version)


def test_promote_and_rollback(registry: ModelRegistry) -> None:
    v1 = save_ensemble(registry, tiny_ensemble(0))
    v2 = save_ensemble(registry, tiny_ensemble(1))
    assert registry.promote(v1) is None
    assert registry.promote(v2) == v1
    assert registry.resolve("production") == v2
    assert registry.rollback() == v1
    assert load_ensemble("production", registry).version == v1
    with pytest.raises(NotFoundError, match="no earlier version"):
        registry.rollback()
    registry.promote(v2, "candidate")
    assert registry.alias("candidate") == v2
    assert registry.alias("production") == v1


def test_a_reader_never_sees_a_half_written_version_or_alias(registry: ModelRegistry) -> None:
    versions = [save_ensemble(registry, tiny_ensemble(s)) for s in range(3)]
    registry.promote(versions[0])
    stop = threading.Event()
    seen: list[str] = []
    failures: list[BaseException] = []

    def reader() -> None:
        fresh = ModelRegistry(registry.root, fallback=None)  # its own object, as another process has
        while not stop.is_set():
            try:
                tensors, manifest = fresh.load("production")
                assert manifest["version"] in versions
                assert set(tensors) == set(tiny_ensemble(0).tensors())
                seen.append(manifest["version"])
            except BaseException as exc:
                failures.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(60):
            registry.promote(versions[1 + i % 2])
            if i % 3 == 0:
                registry.rollback()
            # New versions land while the reader reads: never visible half-written.
            if i % 20 == 0:
                versions.append(save_ensemble(registry, tiny_ensemble(10 + i)))
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not failures, failures[0]
    assert len(set(seen)) >= 2
    record = json.loads((registry.aliases_dir / "production.json").read_text())
    assert record["version"] in versions


def test_production_falls_back_to_the_shipped_ensemble(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "empty")
    ens = load_ensemble("production", registry, device=torch.device("cpu"))
    assert ens.version == registry.versions()[-1]
    # The shipped default is the specialist ensemble: two members per imaging-condition regime.
    assert ens.members == 6
    assert ens.config.regimes == ("reference", "reference", "low-dose", "low-dose", "blur", "blur")
