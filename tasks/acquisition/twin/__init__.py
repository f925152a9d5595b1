"""The digital twin of a HAADF-STEM (simulation only: never imported by runtime paths on its own)."""

from .lattices import CLASS_NAMES, LATTICE_NAMES, LATTICES, Lattice, get_lattice
from .scene import NORMAL, SUBSTITUTED, VACANCY, Scene
from .schedule import DEFAULT_CONDITIONS, PRESETS, Change, DriftSchedule
from .twin import DigitalTwin

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_CONDITIONS",
    "LATTICES",
    "LATTICE_NAMES",
    "NORMAL",
    "PRESETS",
    "SUBSTITUTED",
    "VACANCY",
    "Change",
    "DigitalTwin",
    "DriftSchedule",
    "Lattice",
    "Scene",
    "get_lattice",
]
