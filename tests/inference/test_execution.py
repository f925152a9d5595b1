"""Every way of running the shipped ensemble gives its outputs; the fastest is chosen, and missing ones are skipped."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from scopeflow.errors import InputError
from storage.models import ModelRegistry
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.inference.ensemble import Ensemble
from tasks.inference.execution import EXACT, Execution, build, excess, forget_choices
from tasks.inference.network import FusedUNet
from tasks.inference.registry import load_ensemble


@pytest.fixture(autouse=True)
def fresh_trials() -> None:
    forget_choices()  # each test sees its own trials, not another test's


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Ensemble:
    # An empty registry: "production" is the ensemble shipped in storage/default_models.
    registry = ModelRegistry(tmp_path_factory.mktemp("registry"))
    return load_ensemble("production", registry, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def frames() -> tuple[np.ndarray, float]:
    shots = [DigitalTwin(s, DriftSchedule(), (160, 160)).acquire(1) for s in range(2)]
    return np.stack([f.image for f in shots]).astype(np.float32), shots[0].pixel_size


def _available(ensemble: Ensemble) -> list[str]:
    names = []
    for name in EXACT:
        try:
            build(name, ensemble.net, ensemble.device)
        except (ImportError, RuntimeError):
            continue
        names.append(name)
    return names


def test_every_exact_path_gives_the_fused_outputs_within_1e_5(
    shipped: Ensemble, frames: tuple[np.ndarray, float]
) -> None:
    images, p = frames
    names = _available(shipped)
    assert {"fused", "loop"} <= set(names)
    x, _ = shipped._prepare(images, p)
    with torch.inference_mode():
        reference = build("fused", shipped.net, shipped.device)(x)
        for name in names:
            got = build(name, shipped.net, shipped.device)(x)
            # Probabilities and offsets (px) within 1e-5, features within 1e-5 relative.
            assert excess(got, reference, shipped.net.n_classes) <= 1.0, name
    raw = Ensemble(shipped.net, shipped.config, device=shipped.device, check=False, execution="fused")
    expected = raw.locate(images, p)
    for name in names:
        other = Ensemble(shipped.net, shipped.config, device=shipped.device, check=False, execution=name)
        for a, b in zip(other.locate(images, p), expected, strict=True):
            assert len(a) == len(b) > 20, name
            np.testing.assert_allclose(a.rowcol, b.rowcol, atol=1e-4, err_msg=name)
            np.testing.assert_array_equal(a.cls, b.cls)


def test_auto_times_the_paths_once_per_shape_and_keeps_the_fastest(
    shipped: Ensemble, frames: tuple[np.ndarray, float]
) -> None:
    images, p = frames
    ensemble = Ensemble(shipped.net, shipped.config, device=shipped.device, check=False)
    first = ensemble.locate(images, p)
    (shape, choice), *others = ensemble.runner.choices.items()
    assert not others
    assert shape[0] == 2
    assert set(choice.seconds) | set(choice.refused) == set(EXACT)
    assert choice.path == min(choice.seconds, key=choice.seconds.__getitem__)
    assert "bf16" not in choice.seconds  # inexact: by name only
    again = ensemble.locate(images, p)
    assert ensemble.runner.choices[shape] is choice  # no second trial
    for a, b in zip(first, again, strict=True):
        np.testing.assert_allclose(a.rowcol, b.rowcol, atol=1e-4)
    ensemble.locate(images[:1], p)  # another batch shape: its own trial
    assert len(ensemble.runner.choices) == 2
    # Another ensemble of the same architecture (here the same weights) reuses the choices.
    other = Ensemble(shipped.net.select([5, 4, 3, 2, 1, 0]), shipped.config, device=shipped.device)
    assert other.runner.choices == ensemble.runner.choices


def test_a_missing_runtime_is_skipped_by_auto_and_refused_by_name(
    shipped: Ensemble, frames: tuple[np.ndarray, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    images, p = frames
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    ensemble = Ensemble(shipped.net, shipped.config, device=shipped.device, check=False)
    assert len(ensemble.locate(images, p)[0]) > 20
    choice = next(iter(ensemble.runner.choices.values()))
    assert choice.refused["onnx"] == "unavailable"
    assert choice.path != "onnx"
    forced = Ensemble(shipped.net, shipped.config, device=shipped.device, check=False, execution="onnx")
    with pytest.raises(InputError, match="cannot run"):
        forced.locate(images, p)
    with pytest.raises(InputError, match="unknown execution path"):
        Execution(shipped.net, shipped.device, "tensorrt")


def test_runners_follow_weights_changed_in_place() -> None:
    torch.manual_seed(0)
    net = FusedUNet(2, (4, 8, 8))
    execution = Execution(net, torch.device("cpu"), "loop")
    x = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        before = execution(x)[0]
    with torch.no_grad():
        net.head.bias.add_(1.0)  # as an optimiser step would
    with torch.inference_mode():
        after = execution(x)[0]
        assert torch.allclose(after, net.logits(x), atol=1e-5)
    assert not torch.allclose(before, after)
