"""Imaging conditions as a function of the frame index: defaults plus a drift schedule.

A schedule is a list of changes. Each change sets one condition from frame ``start`` on,
abruptly (``ramp == 0``) or linearly over ``ramp`` frames (the dose log-linearly). The text
form, used on the command line, is comma-separated ``key=value@start[~ramp]`` items, e.g.
``defocus=60@500,dose=2e5@1000~200,lattice=mos2@1500``; a preset name or a JSON file with a
list of ``{"key", "value", "start", "ramp"}`` objects is accepted too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow.errors import InputError

from .lattices import LATTICE_NAMES

DEFAULT_CONDITIONS: dict[str, Any] = {
    "lattice": "graphene",
    "region": 0,  # sample region: seeds rotation, defects and contamination
    "pixel_size": 0.12,  # Å/px
    "voltage_kv": 60.0,
    "semiangle_mrad": 25.0,
    "defocus": 0.0,  # Å
    "cs_mm": 0.0,
    "source_size": 0.3,  # Å, standard deviation of the Gaussian source
    "dose": 5e6,  # e/Å²
    "background": 2e-4,  # detector fraction per pixel from the support and the tails
    "read_noise": 0.5,  # counts rms
    "jitter": 0.15,  # px rms shift per scan line
    "drift_x": 0.02,  # Å per frame
    "drift_y": 0.01,  # Å per frame
    "contamination": 0.0,  # fraction of the area under amorphous contamination
    "vacancy_rate": 0.01,
    "substitution_rate": 0.005,
    "frame_time": 1.0,  # s between frames
}

# Physical domains, so a mistake is refused when the schedule is read, not at the frame it starts:
# (lowest, highest, lowest included). A dose or a rate outside them has no image.
_DOMAINS: dict[str, tuple[float, float, bool]] = {
    "region": (0, math.inf, True),
    "pixel_size": (0.0, math.inf, False),
    "voltage_kv": (0.0, math.inf, False),
    "semiangle_mrad": (0.0, math.inf, False),
    "source_size": (0.0, math.inf, True),
    "dose": (0.0, math.inf, False),
    "background": (0.0, 1.0, True),
    "read_noise": (0.0, math.inf, True),
    "jitter": (0.0, math.inf, True),
    "contamination": (0.0, 1.0, True),
    "vacancy_rate": (0.0, 1.0, True),
    "substitution_rate": (0.0, 1.0, True),
    "frame_time": (0.0, math.inf, False),
}

_STRING_KEYS = {"lattice"}
_INT_KEYS = {"region"}
_LOG_KEYS = {"dose"}


def _coerce(key: str, value: Any) -> Any:
    if key in _STRING_KEYS:
        return str(value)
    try:
        number = int(value) if key in _INT_KEYS else float(value)
    except (TypeError, ValueError):
        raise InputError(f"condition {key!r} needs a number, got {value!r}") from None
    low, high, closed = _DOMAINS.get(key, (-math.inf, math.inf, True))
    if not math.isfinite(number) or number > high or number < low or (number == low and not closed):
        bound = f"{'≥' if closed else '>'} {low:g}" + (f" and ≤ {high:g}" if math.isfinite(high) else "")
        raise InputError(f"condition {key!r} must be {bound}, got {value!r}")
    return number


@dataclass(frozen=True)
class Change:
    """Condition ``key`` moves to ``value`` from frame ``start``, over ``ramp`` frames."""

    key: str
    value: Any
    start: int
    ramp: int = 0

    def __post_init__(self) -> None:
        if self.key not in DEFAULT_CONDITIONS:
            raise InputError(f"unknown condition {self.key!r}; known: {', '.join(DEFAULT_CONDITIONS)}")
        if self.start < 0 or self.ramp < 0:
            raise InputError(f"change of {self.key!r}: start and ramp must be ≥ 0")
        object.__setattr__(self, "value", _coerce(self.key, self.value))
        if self.key == "lattice" and self.value not in LATTICE_NAMES:
            raise InputError(f"unknown lattice {self.value!r}; known: {', '.join(LATTICE_NAMES)}")


PRESETS: dict[str, tuple[Change, ...]] = {
    "none": (),
    # A short loop for `scopeflow run`: at frame 64 the dose drops to 4e4 e/Å², below the
    # generalist members' training range (2e5) and where even the low-dose members (trained
    # down to 1e4) lose F1; the atoms are still there to be found.
    "demo": (Change("dose", 4e4, 64),),
    # The benchmark stream: ≥ 2000 frames, four events with stationary stretches between.
    # Each leaves the reference conditions in a way that costs the generalist members F1: a
    # dose drop and a strong defocus (the low-dose and blur specialists cover these), a
    # return to the reference, and a new lattice that no member was specialised for.
    "standard": (
        Change("dose", 4e4, 500),
        Change("dose", 5e6, 1000),
        Change("defocus", 130.0, 1000),
        Change("defocus", 0.0, 1500),
        Change("lattice", "mos2", 2000),
    ),
}


@dataclass(frozen=True)
class DriftSchedule:
    """Conditions per frame: ``base`` values changed by ``changes`` in order of their start."""

    changes: tuple[Change, ...] = ()
    base: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_CONDITIONS))
    _offsets: list[np.ndarray] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.changes, key=lambda c: c.start))
        object.__setattr__(self, "changes", ordered)
        merged = {**DEFAULT_CONDITIONS, **self.base}
        object.__setattr__(self, "base", {k: _coerce(k, v) for k, v in merged.items()})

    def at(self, index: int, upto: int | None = None) -> dict[str, Any]:
        """The conditions of frame ``index`` (applying only the first ``upto`` changes)."""
        state = dict(self.base)
        changes = self.changes if upto is None else self.changes[:upto]
        for n, change in enumerate(changes):
            if change.start > index:
                break
            new = _coerce(change.key, change.value)
            progress = 1.0 if change.ramp == 0 else min(1.0, (index - change.start) / change.ramp)
            if progress >= 1.0 or change.key in _STRING_KEYS | _INT_KEYS:
                state[change.key] = new
                continue
            before = self.at(change.start, upto=n)[change.key]
            if change.key in _LOG_KEYS and before > 0 and new > 0:
                state[change.key] = math.exp(math.log(before) + progress * (math.log(new) - math.log(before)))
            else:
                state[change.key] = before + progress * (new - before)
        return state

    def offset(self, index: int) -> tuple[float, float]:
        """Accumulated sample drift (x, y) in Å before frame ``index``."""
        if not self._offsets or len(self._offsets[0]) <= index:
            n = max(index + 1, 2 * (len(self._offsets[0]) if self._offsets else 256))
            steps = np.array([[c["drift_x"], c["drift_y"]] for c in map(self.at, range(n))])
            cumulative = np.vstack([np.zeros((1, 2)), np.cumsum(steps, axis=0)[:-1]])
            self._offsets[:] = [cumulative]
        x, y = self._offsets[0][index]
        return float(x), float(y)

    def describe(self) -> str:
        """The schedule in its text form (round-trips through ``parse``)."""
        return ",".join(
            f"{c.key}={c.value}@{c.start}" + (f"~{c.ramp}" if c.ramp else "") for c in self.changes
        )

    @classmethod
    def parse(cls, text: str | None, base: Mapping[str, Any] | None = None) -> DriftSchedule:
        """A schedule from a preset name, a JSON file path, or ``key=value@start[~ramp],…``."""
        base = dict(base or {})
        if not text:
            return cls((), base)
        if text in PRESETS:
            return cls(PRESETS[text], base)
        path = Path(text)
        if path.suffix == ".json" and path.exists():
            try:
                items = json.loads(path.read_text())
                return cls(tuple(Change(**item) for item in items), base)
            except (json.JSONDecodeError, TypeError) as exc:
                raise InputError(f"drift schedule {path}: {exc}") from exc
        changes = []
        for item in filter(None, (s.strip() for s in text.split(","))):
            try:
                assignment, when = item.split("@")
                key, value = assignment.split("=")
                start, tilde, ramp = when.partition("~")
                if tilde and not ramp.strip():
                    raise InputError(
                        f"drift item {item!r}: '~' needs a ramp length in frames (…@start~frames)"
                    )
                changes.append(Change(key.strip(), value.strip(), int(start), int(ramp or 0)))
            except ValueError as exc:
                if isinstance(exc, InputError):
                    raise
                raise InputError(
                    f"cannot read drift item {item!r}: expected key=value@start[~ramp] "
                    f"or a preset ({', '.join(PRESETS)})"
                ) from None
        return cls(tuple(changes), base)
