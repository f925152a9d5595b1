"""What a scalarizer is: one number per spectrum, the property the campaign maximises."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from scopeflow.errors import InputError


@runtime_checkable
class Scalarizer(Protocol):
    """Maps spectra (n, n_e) on an energy axis (n_e,) eV to values (n,)."""

    name: str

    def __call__(self, energy: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """The scalar per spectrum."""
        ...

    def describe(self) -> dict[str, Any]:
        """Its name and settings, JSON-able (for provenance)."""
        ...


def window(energy: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Boolean mask of the channels with lo ≤ E ≤ hi (eV); an error if it holds no channel."""
    if hi <= lo:
        raise InputError(f"energy window needs lo < hi, got [{lo}, {hi}] eV")
    mask = (energy >= lo) & (energy <= hi)
    if not mask.any():
        raise InputError(
            f"energy window [{lo}, {hi}] eV holds no channel of [{energy[0]:.2f}, {energy[-1]:.2f}] eV"
        )
    return mask


def as_spectra(counts: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """Counts as float64 (n, n_e), checked against the energy axis."""
    c = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    if c.shape[-1] != len(energy):
        raise InputError(f"spectra have {c.shape[-1]} channels, the energy axis {len(energy)}")
    return c
