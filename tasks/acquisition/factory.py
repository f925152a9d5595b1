"""Build an instrument from plain parameters (CLI flags, flow parameters)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from scopeflow.errors import InputError

from .instrument import Instrument

INSTRUMENT_KINDS = ("twin", "folder")


def make_instrument(
    kind: str,
    *,
    seed: int = 0,
    drift: str | None = None,
    folder: str | Path | None = None,
    pixel_size: float | None = None,
    shape: tuple[int, int] = (256, 256),
    timeout: float = 60.0,
    report: Callable[[str], None] | None = None,
) -> Instrument:
    """A digital twin (``seed``, ``drift`` schedule) or a folder watcher (``folder``)."""
    if kind == "twin":
        # Imported here: the simulator is never loaded on a real instrument's path.
        from .twin import DigitalTwin, DriftSchedule

        base = {"pixel_size": pixel_size} if pixel_size else {}
        return DigitalTwin(seed=seed, schedule=DriftSchedule.parse(drift, base), shape=shape)
    if kind == "folder":
        if folder is None:
            raise InputError("the folder instrument needs --watch FOLDER")
        from .watcher import FolderWatcher

        if timeout <= 0:
            raise InputError(f"the folder instrument's timeout must be > 0 s, got {timeout:g}")
        return FolderWatcher(folder, pixel_size=pixel_size, timeout=timeout, report=report)
    raise InputError(f"unknown instrument {kind!r}; choose one of {', '.join(INSTRUMENT_KINDS)}")
