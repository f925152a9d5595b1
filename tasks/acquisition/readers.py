"""Reading one image file: ``.npy``, TIFF, or anything rosettasciio reads (``.hspy``, ``.dm4``, ``.emd``, …).

``read_image(path)`` returns the image as a 2-D float32 array, its pixel size in Å/px when
the file records one (``None`` otherwise) and a small metadata dict. Used by ``scopeflow
locate`` and by the folder watcher; every way a file can be unusable ends in an
``InputError`` (or ``NotFoundError``) that names the file and the reason.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow.errors import InputError, NotFoundError

# Length units rosettasciio and TIFF metadata use, in Å.
_UNITS_IN_ANGSTROM = {
    "a": 1.0,
    "å": 1.0,
    "Å": 1.0,
    "angstrom": 1.0,
    "ang": 1.0,
    "pm": 0.01,
    "nm": 10.0,
    "µm": 1e4,
    "um": 1e4,
    "μm": 1e4,
    "micron": 1e4,
    "mm": 1e7,
    "cm": 1e8,
    "m": 1e10,
}


def to_angstrom(scale: float, units: Any) -> float | None:
    """``scale`` in ``units`` as Å, or None when the units are not a length we know."""
    if units is None or scale is None:
        return None
    key = str(units).strip()
    factor = _UNITS_IN_ANGSTROM.get(key, _UNITS_IN_ANGSTROM.get(key.lower()))
    if factor is None or not np.isfinite(scale) or scale <= 0:
        return None
    return float(scale) * factor


def _as_image(data: Any, path: Path) -> np.ndarray:
    """Validate and convert array-like ``data`` to a 2-D float32 image."""
    arr = np.asarray(data)
    if arr.dtype.kind not in "biuf" or arr.dtype == bool:
        raise InputError(f"{path}: holds {arr.dtype} data, not an image of numbers")
    arr = np.squeeze(arr) if arr.ndim > 2 and sum(s > 1 for s in arr.shape) == 2 else arr
    if arr.ndim != 2:
        raise InputError(f"{path}: expected a 2-D image, got an array of shape {arr.shape}")
    if min(arr.shape) < 8:
        raise InputError(f"{path}: image of shape {arr.shape} is too small (at least 8×8 px)")
    image = arr.astype(np.float32)
    if not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise InputError(f"{path}: image has {bad} NaN or infinite pixels")
    return image


def _read_npy(path: Path) -> tuple[np.ndarray, float | None, dict[str, Any]]:
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from exc
    return _as_image(data, path), None, {"format": "npy", "dtype": str(data.dtype)}


def _plugins_for(suffix: str) -> list[dict[str, Any]]:
    from rsciio import IO_PLUGINS

    ext = suffix.lstrip(".").lower()
    return [p for p in IO_PLUGINS if ext in (e.lower() for e in p["file_extensions"])]


def _read_rsciio(path: Path) -> tuple[np.ndarray, float | None, dict[str, Any]]:
    plugins = _plugins_for(path.suffix)
    if not plugins:
        raise InputError(
            f"{path}: unknown image format {path.suffix!r} (expected .npy, .tif or a rosettasciio format)"
        )
    errors = []
    for plugin in plugins:
        try:
            reader = importlib.import_module(plugin["api"]).file_reader
            # rosettasciio logs and warns about vendor metadata it skips; the file still reads.
            logging.getLogger("rsciio").setLevel(logging.ERROR)
            signals = reader(str(path))
        except ImportError as exc:
            errors.append(f"{plugin['name']}: needs an optional package ({exc.name})")
            continue
        except Exception as exc:
            errors.append(f"{plugin['name']}: {type(exc).__name__}: {exc}")
            continue
        images = [s for s in signals if np.asarray(s["data"]).ndim >= 2]
        if not images:
            raise InputError(
                f"{path}: holds no image (signals of shapes {[np.shape(s['data']) for s in signals]})"
            )
        signal = images[0]
        image = _as_image(signal["data"], path)
        axes = [a for a in signal.get("axes", []) if a.get("size", 0) > 1 and not a.get("navigate", False)]
        sizes = [to_angstrom(a.get("scale"), a.get("units")) for a in axes[-2:]]
        pixel_size = sizes[-1] if sizes and all(s is not None for s in sizes) else None
        title = signal.get("metadata", {}).get("General", {}).get("title", "")
        return (
            image,
            pixel_size,
            {"format": plugin["name"], "title": title, "axes_units": [a.get("units") for a in axes]},
        )
    raise InputError(f"{path}: cannot read it as {path.suffix} ({'; '.join(errors)})")


def _tiff_pixel_size(path: Path) -> float | None:
    """Pixel size from ImageJ's ``unit`` or the TIFF resolution tags (pixels per unit), in Å."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        xres = page.tags.get("XResolution")
        if xres is None:
            return None
        num, den = xres.value
        if not num or not den:
            return None
        unit = (tif.imagej_metadata or {}).get("unit")
        if unit is None:
            res_unit = page.tags.get("ResolutionUnit")
            unit = {3: "cm"}.get(int(res_unit.value) if res_unit is not None else 0)
        return to_angstrom(den / num, unit)


def _read_tiff(path: Path) -> tuple[np.ndarray, float | None, dict[str, Any]]:
    try:
        image, pixel_size, meta = _read_rsciio(path)
        if pixel_size is None:
            pixel_size = _tiff_pixel_size(path)
        return image, pixel_size, meta
    except InputError as first:
        import tifffile

        try:
            data = tifffile.imread(path)
        except Exception as exc:
            raise InputError(f"{path}: not a readable TIFF ({exc})") from exc
        if np.asarray(data).ndim != 2:
            raise InputError(
                f"{path}: expected a 2-D image, got an array of shape {np.shape(data)}"
            ) from first
        return _as_image(data, path), None, {"format": "TIFF"}


def read_image(path: str | Path) -> tuple[np.ndarray, float | None, dict[str, Any]]:
    """The 2-D image in ``path`` (float32), its pixel size in Å/px if recorded, and metadata."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy(path)
    if suffix in (".tif", ".tiff"):
        return _read_tiff(path)
    return _read_rsciio(path)
