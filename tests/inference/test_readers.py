"""Reading images: .npy, TIFF (with and without a pixel size), .hspy, and the ways files fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from scopeflow.errors import InputError, NotFoundError
from tasks.acquisition.readers import read_image


def write_hspy(path: Path, image: np.ndarray, pixel_size_nm: float) -> None:
    """An .hspy file written by rosettasciio (what HyperSpy saves)."""
    from rsciio.hspy import file_writer

    axes = [
        {"name": name, "scale": pixel_size_nm, "units": "nm", "size": n, "offset": 0.0, "navigate": False}
        for name, n in zip(("y", "x"), image.shape, strict=True)
    ]
    signal = {
        "data": image,
        "axes": axes,
        "metadata": {"General": {"title": "test frame"}, "Signal": {"signal_type": ""}},
        "original_metadata": {},
        "attributes": {"_lazy": False},
        "tmp_parameters": {},
        "package_info": {"name": "scopeflow-tests", "version": "0"},
        "learning_results": {},
        "models": {},
    }
    file_writer(str(path), signal, show_progressbar=False)


def write_tiff(path: Path, image: np.ndarray, pixel_size_nm: float | None) -> None:
    if pixel_size_nm is None:
        tifffile.imwrite(path, image)
    else:
        res = 1.0 / pixel_size_nm
        tifffile.imwrite(path, image, imagej=True, resolution=(res, res), metadata={"unit": "nm"})


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).poisson(5.0, (48, 40)).astype(np.float32)


def test_npy_tiff_and_hspy(tmp_path: Path, image: np.ndarray) -> None:
    np.save(tmp_path / "a.npy", image.astype(np.uint16))
    write_tiff(tmp_path / "b.tif", image, 0.012)
    write_tiff(tmp_path / "c.tif", image, None)
    write_hspy(tmp_path / "d.hspy", image, 0.011)
    expected = {"a.npy": None, "b.tif": 0.12, "c.tif": None, "d.hspy": 0.11}
    for name, pixel_size in expected.items():
        data, p, meta = read_image(tmp_path / name)
        assert data.dtype == np.float32
        assert np.array_equal(data, image), name
        assert p == pytest.approx(pixel_size) if pixel_size else p is None, name
        assert meta["format"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("text.npy", b"not an array", "not a readable .npy"),
        ("text.tif", b"not a tiff", "TIFF"),
        ("notes.xyz", b"hello", "unknown image format"),
    ],
)
def test_files_that_are_not_images(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_image(tmp_path / name)


def test_shapes_values_and_missing_files(tmp_path: Path) -> None:
    np.save(tmp_path / "cube.npy", np.zeros((3, 32, 32)))
    np.save(tmp_path / "nan.npy", np.full((32, 32), np.nan))
    np.save(tmp_path / "words.npy", np.array(["a", "b"]))
    with pytest.raises(InputError, match="2-D"):
        read_image(tmp_path / "cube.npy")
    with pytest.raises(InputError, match="NaN"):
        read_image(tmp_path / "nan.npy")
    with pytest.raises(InputError, match="not an image"):
        read_image(tmp_path / "words.npy")
    with pytest.raises(NotFoundError):
        read_image(tmp_path / "absent.npy")
