"""The imaging conditions training frames are drawn from: wide ranges around the twin's defaults.

Each draw is one frame's ``DriftSchedule`` base: lattice and crystal rotation (``region``),
pixel size (scale), optics (voltage, convergence, defocus, Cs, source size: blur), dose and
detector noise, scan jitter (distortion) and amorphous contamination. ``Regime``: a named part of
those ranges that a specialist member is trained for (``REGIMES``; used by ``specialists`` and
``finetune``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ConditionRanges:
    """Ranges of the training conditions (units as in the twin: Å, Å/px, kV, mrad, e/Å², px)."""

    lattices: tuple[str, ...] = ("graphene", "mos2", "perovskite")
    lattice_weights: tuple[float, ...] = (0.5, 0.25, 0.25)
    pixel_size: tuple[float, float] = (0.05, 0.3)  # log-uniform
    voltage_kv: tuple[float, ...] = (60.0, 80.0, 100.0, 200.0)
    semiangle_mrad: tuple[float, float] = (18.0, 32.0)
    defocus: tuple[float, float] = (0.0, 90.0)  # |Å|, either sign
    cs_mm: tuple[float, float] = (0.0, 0.005)
    source_size: tuple[float, float] = (0.2, 0.6)
    dose: tuple[float, float] = (2e5, 5e7)  # log-uniform
    background: tuple[float, float] = (5e-5, 2e-3)  # log-uniform
    read_noise: tuple[float, float] = (0.0, 2.0)
    jitter: tuple[float, float] = (0.0, 0.45)
    contamination_probability: float = 0.35
    contamination: tuple[float, float] = (0.1, 0.8)
    vacancy_rate: tuple[float, float] = (0.0, 0.05)
    substitution_rate: tuple[float, float] = (0.0, 0.05)
    # Share of frames with every column removed: vacuum, or amorphous film where contaminated,
    # whose target is empty: the network must learn that no crystal means no columns. The
    # shipped v0005 was specialised from v0004 with it (2026-11-30): its raw columns on 256²
    # frames of shot noise went from 114 to 2.8, vacuum 123 to 11.6, amorphous contrast 114 to
    # 60, with abTEM F1 and vacancies unchanged (benchmarks/README.md, accuracy).
    crystal_free_probability: float = 0.2

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, for the model's lineage."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConditionRanges:
        """Back from ``as_dict`` (a lineage's ranges); fields it lacks keep their defaults."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def sample_conditions(
    rng: np.random.Generator, ranges: ConditionRanges = ConditionRanges()
) -> dict[str, Any]:
    """One frame's conditions (a ``DriftSchedule`` base) drawn from ``ranges``."""
    r = ranges
    weights = np.asarray(r.lattice_weights, float)
    contaminated = rng.uniform() < r.contamination_probability
    conditions = {
        "lattice": str(rng.choice(r.lattices, p=weights / weights.sum())),
        "region": int(rng.integers(0, 2**31 - 1)),
        "pixel_size": _log_uniform(rng, *r.pixel_size),
        "voltage_kv": float(rng.choice(r.voltage_kv)),
        "semiangle_mrad": float(rng.uniform(*r.semiangle_mrad)),
        "defocus": float(rng.uniform(*r.defocus) * rng.choice([-1.0, 1.0])),
        "cs_mm": float(rng.uniform(*r.cs_mm)),
        "source_size": float(rng.uniform(*r.source_size)),
        "dose": _log_uniform(rng, *r.dose),
        "background": _log_uniform(rng, *r.background),
        "read_noise": float(rng.uniform(*r.read_noise)),
        "jitter": float(rng.uniform(*r.jitter)),
        "contamination": float(rng.uniform(*r.contamination)) if contaminated else 0.0,
        "vacancy_rate": float(rng.uniform(*r.vacancy_rate)),
        "substitution_rate": float(rng.uniform(*r.substitution_rate)),
        # The twin's frame 1 is offset by one frame of drift: a random window of the sample.
        "drift_x": float(rng.uniform(0.0, 200.0)),
        "drift_y": float(rng.uniform(0.0, 200.0)),
    }
    # Drawn last and only when asked for, so that earlier configurations draw what they drew.
    if r.crystal_free_probability > 0 and rng.uniform() < r.crystal_free_probability:
        conditions["vacancy_rate"] = 1.0
    return conditions


@dataclass(frozen=True)
class Regime:
    """A regime of imaging conditions a member can be trained for.

    ``ranges`` are the training conditions inside the regime (units as in
    ``ConditionRanges``: e/Å², Å, Å/px, kV, mrad); ``share`` is the fraction (0–1) of a
    member's training pool drawn from the regime, the rest from the standard ranges. A
    regime whose ranges are the standard ones draws nothing extra.
    """

    name: str
    ranges: ConditionRanges = field(default_factory=ConditionRanges)
    share: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise ValueError(f"regime {self.name!r}: share must be in (0, 1], got {self.share}")

    @property
    def is_standard(self) -> bool:
        """True when the regime is the standard ranges (no samples of its own)."""
        return self.ranges == ConditionRanges()

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, for the model's lineage."""
        return {"name": self.name, "share": self.share, "ranges": self.ranges.as_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Regime:
        """Back from ``as_dict`` (the regimes in a model's lineage)."""
        return cls(str(data["name"]), ConditionRanges.from_dict(data["ranges"]), float(data["share"]))


REFERENCE = Regime("reference", ConditionRanges(), share=1.0)
LOW_DOSE = Regime("low-dose", replace(ConditionRanges(), dose=(1e4, 3e5)), share=0.75)
BLUR = Regime("blur", replace(ConditionRanges(), defocus=(90.0, 180.0)), share=0.75)
REGIMES: dict[str, Regime] = {r.name: r for r in (REFERENCE, LOW_DOSE, BLUR)}
# Two members per regime: a selected pair still has a spread, so its uncertainty means something.
DEFAULT_LAYOUT: tuple[Regime, ...] = (REFERENCE, REFERENCE, LOW_DOSE, LOW_DOSE, BLUR, BLUR)
