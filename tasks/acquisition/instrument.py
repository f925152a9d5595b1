"""The seams between scopeflow and a microscope: ``Instrument`` (frames) and ``Spectrometer``
(point spectra at probe positions), and what they return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Truth:
    """Ground truth of one frame, known only for simulated frames.

    ``rowcol`` holds the atom columns' positions in pixels of the frame (row, column),
    ``cls`` their intensity class (0 light, 1 medium, 2 heavy) and ``weight`` the
    column's Z-contrast weight (sum of Z^1.7 over the atoms in the column).
    """

    rowcol: np.ndarray  # (n, 2) float32, pixels
    cls: np.ndarray  # (n,) int8
    weight: np.ndarray  # (n,) float32


@dataclass(frozen=True)
class Frame:
    """One acquired image with the conditions it was taken under.

    ``image`` is 2-D float32 in detector counts; ``pixel_size`` in Å/px; ``time`` a UTC
    ``numpy.datetime64``; ``conditions`` maps condition names to numbers or short strings.
    """

    index: int
    image: np.ndarray
    pixel_size: float
    time: np.datetime64
    conditions: dict[str, Any] = field(default_factory=dict)
    truth: Truth | None = None
    source: str = ""


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
