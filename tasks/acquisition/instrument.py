"""The seams between scopeflow and a microscope: ``Instrument`` (frames) and ``Spectrometer``
(point spectra at probe positions), and what they return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from scopeflow.frame import Frame


@runtime_checkable
class Instrument(Protocol):
    """A microscope that acquires frames; the digital twin and the folder watcher implement it."""

    name: str

    def acquire(self, index: int) -> Frame:
        """Acquire frame number ``index`` of the run (blocking until it exists)."""
        ...

    def conditions(self, index: int) -> dict[str, Any]:
        """Imaging conditions in force (or planned) for frame ``index``."""
        ...

    def state(self) -> dict[str, Any]:
        """A JSON-able description of the instrument (name, kind, settings) for provenance."""
        ...


@dataclass(frozen=True)
class Spectra:
    """Spectra measured at probe positions (row, col px of the survey frame) and their cost."""

    rowcol: np.ndarray  # (n, 2) float64, px
    energy: np.ndarray  # (n_e,) eV
    counts: np.ndarray  # (n, n_e) float32, counts
    seconds: np.ndarray  # (n,) dwell plus settling, s
    dose: np.ndarray  # (n,) e/Å² delivered to the probed area


@runtime_checkable
class Spectrometer(Protocol):
    """Point spectroscopy with a parked probe on the area of a survey frame (EELS, EDX, CL).

    The digital twin's EELS channel implements it; active learning sees only this.
    """

    energy: np.ndarray  # (n_e,) eV, the channels every spectrum has

    def measure(self, rowcol: np.ndarray) -> Spectra:
        """Spectra at probe positions (n, 2) (row, col px), blocking until measured."""
        ...

    def state(self) -> dict[str, Any]:
        """A JSON-able description of the spectrometer and its settings, for provenance."""
        ...
