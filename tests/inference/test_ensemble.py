"""The fused network and the ensemble wrapper: fusion is exact, inputs are checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scopeflow.errors import InputError
from tasks.inference.ensemble import Ensemble, EnsembleConfig
from tasks.inference.network import FusedUNet


@pytest.fixture(scope="module")
def tiny() -> Ensemble:
    torch.manual_seed(0)
    net = FusedUNet(3, (4, 8, 8))
    return Ensemble(
        net, EnsembleConfig(members=3, widths=(4, 8, 8), threshold=0.5), device=torch.device("cpu")
    )


def test_fused_members_equal_the_members_run_alone(tiny: Ensemble) -> None:
    x = torch.randn(2, 1, 32, 40)
    with torch.inference_mode():
        fused = tiny.net(x)
        alone = torch.stack([tiny.net.member(k)(x)[:, 0] for k in range(3)], dim=1)
        picked = tiny.net.select([2, 0])(x)
    assert fused.shape == (2, 3, 3 + 2, 32, 40)
    assert torch.allclose(fused, alone, atol=1e-5)
    assert torch.allclose(picked, fused[:, [2, 0]], atol=1e-5)
    assert torch.allclose(
        FusedUNet.stack([tiny.net.member(1), tiny.net.member(0)])(x), fused[:, [1, 0]], atol=1e-5
    )


def test_locate_and_embed_handle_any_shape_and_pixel_size(tiny: Ensemble) -> None:
    rng = np.random.default_rng(0)
    frames = [rng.poisson(5, (100, 90)).astype(np.float32), rng.poisson(5, (64, 64)).astype(np.float32)]
    atoms = tiny.locate(frames, [0.07, 0.25])
    assert len(atoms) == 2
    for a, f in zip(atoms, frames, strict=True):
        assert a.rowcol.shape[1] == 2
        assert ((a.rowcol >= -1) & (a.rowcol <= np.array(f.shape) + 1)).all()
    emb = tiny.embed(frames, [0.07, 0.25])
    assert emb.shape == (2, 3 * 8)
    maps = tiny.maps(frames[1], 0.2)
    assert maps.members.shape == (1, 3, 3 + 2, 64, 64)
    assert maps.variance.shape == (1, 64, 64)


@pytest.mark.parametrize(
    ("frame", "pixel_size", "message"),
    [
        (np.zeros((4, 32, 32)), 0.1, "2-D"),
        (np.full((32, 32), np.nan), 0.1, "NaN"),
        (np.zeros((32, 32)), 0.5, "outside the range"),
    ],
)
def test_bad_frames_are_refused(tiny: Ensemble, frame: np.ndarray, pixel_size: float, message: str) -> None:
    with pytest.raises(InputError, match=message):
        tiny.locate([frame], pixel_size)


def test_subsets_of_members_decode_from_one_pass(ensemble: Ensemble) -> None:
    from tasks.acquisition.twin import DigitalTwin, DriftSchedule

    twin = DigitalTwin(4, DriftSchedule.parse("defocus=60@0"), (128, 128))
    frames = [twin.acquire(i) for i in range(3)]
    images, sizes = [f.image for f in frames], [f.pixel_size for f in frames]
    outputs = ensemble.outputs(images, sizes)
    everyone = ensemble.atoms_of(outputs)
    for got, want in zip(everyone, ensemble.locate(images, sizes), strict=True):
        assert np.allclose(got.rowcol, want.rowcol, atol=1e-4)
    for members in ([1], [0, 3]):
        alone = ensemble.select(members).locate(images, sizes)
        for got, want in zip(ensemble.atoms_of(outputs, members), alone, strict=True):
            assert len(got) == len(want)
            assert np.allclose(got.rowcol, want.rowcol, atol=1e-3)
    with pytest.raises(InputError):
        ensemble.atoms_of(outputs, [ensemble.members])
