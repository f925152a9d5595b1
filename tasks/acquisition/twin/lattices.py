"""Crystal projections the twin can image: Bravais vectors, basis columns and their species.

Columns carry a Z-contrast weight: the sum over the atoms in the column of Z^1.7, the
exponent HAADF intensity follows roughly (Pennycook's Z-contrast).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Z_EXPONENT = 1.7

# Thresholds on the column weight that split columns into intensity classes.
CLASS_EDGES = (150.0, 400.0)
CLASS_NAMES = ("light", "medium", "heavy")


def column_weight(z_numbers: tuple[int, ...]) -> float:
    """Z-contrast weight of a column holding atoms of these atomic numbers."""
    return float(sum(z**Z_EXPONENT for z in z_numbers))


def weight_class(weight: np.ndarray) -> np.ndarray:
    """Intensity class (0 light, 1 medium, 2 heavy) of columns with these weights."""
    return np.searchsorted(np.asarray(CLASS_EDGES), weight).astype(np.int8)


@dataclass(frozen=True)
class Site:
    """One basis column: fractional position, its atoms, and what a defect turns it into."""

    frac: tuple[float, float]
    atoms: tuple[int, ...]
    substitute: tuple[int, ...]


@dataclass(frozen=True)
class Lattice:
    """A 2-D projected crystal: lattice vectors a1, a2 in Å and basis sites."""

    name: str
    a1: tuple[float, float]
    a2: tuple[float, float]
    sites: tuple[Site, ...]
    min_separation: float  # Å, nearest column distance

    def vectors(self) -> np.ndarray:
        """Lattice vectors as a (2, 2) array, rows a1 and a2, in Å (x, y)."""
        return np.array([self.a1, self.a2], dtype=np.float64)


def _hexagonal(a: float) -> tuple[tuple[float, float], tuple[float, float]]:
    return (a, 0.0), (a / 2.0, a * np.sqrt(3.0) / 2.0)


GRAPHENE = Lattice(
    "graphene",
    *_hexagonal(2.46),
    sites=(
        Site((0.0, 0.0), (6,), (14,)),  # C, Si dopant
        Site((1 / 3, 1 / 3), (6,), (14,)),
    ),
    min_separation=1.42,
)

MOS2 = Lattice(
    "mos2",
    *_hexagonal(3.16),
    sites=(
        Site((0.0, 0.0), (42,), (74,)),  # Mo, W substitution
        Site((1 / 3, 1 / 3), (16, 16), (16,)),  # S2 column, single-S vacancy
    ),
    min_separation=1.82,
)

PEROVSKITE = Lattice(
    name="perovskite",
    a1=(3.905, 0.0),
    a2=(0.0, 3.905),
    sites=(
        Site((0.0, 0.0), (38,), (57,)),  # Sr, La substitution
        Site((0.5, 0.5), (22, 8), (41, 8)),  # Ti-O column, Nb substitution
        Site((0.5, 0.0), (8,), (8,)),  # O columns
        Site((0.0, 0.5), (8,), (8,)),
    ),
    min_separation=1.95,
)

LATTICES: dict[str, Lattice] = {lat.name: lat for lat in (GRAPHENE, MOS2, PEROVSKITE)}
LATTICE_NAMES: tuple[str, ...] = tuple(LATTICES)


def get_lattice(name: str) -> Lattice:
    """The lattice called ``name``; a clear error listing the known ones otherwise."""
    try:
        return LATTICES[name]
    except KeyError:
        raise ValueError(f"unknown lattice {name!r}; known: {', '.join(LATTICES)}") from None
