"""Which training regime recent frames were imaged in, from the frames alone (no labels).

A specialist ensemble (``tasks.training.specialists``) has members trained for regimes of
imaging conditions (low dose, strong defocus). Member selection can only pick them if it
can tell which regime the microscope is in now, and the members' own outputs cannot tell
it: their agreement and physics proxies did not rank the regime pairs by F1. The frames
can. We render twin frames from each regime's condition ranges, at the frames' pixel size
and shape and of the lattice their columns show, summarise every frame by the statistics
the conditions move (``matching.frame_statistics``: mean counts, contrast, high- and
low-frequency power) and let each recent frame's nearest rendered frames vote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.training.conditions import ConditionRanges, sample_conditions
from tasks.training.matching import frame_statistics

RENDERS = 40  # twin frames per regime
NEIGHBOURS = 7  # rendered frames that vote for each recent frame


@dataclass(frozen=True)
class RegimeVote:
    """The regime most of the recent frames' nearest renders came from, and every regime's share
    of the votes (0–1; equal renders per regime, so an uninformative frame splits evenly)."""

    regime: str
    shares: dict[str, float]


def _renders(
    ranges: ConditionRanges, lattice: str, pixel_size: float, shape: tuple[int, int], n: int, seed: int
) -> list[np.ndarray]:
    # One lattice, the frames' pixel size: what the instrument's settings and the sample fix;
    # everything else (dose, optics, noise, contamination) varies over the regime's ranges.
    fixed = replace(ranges, lattices=(lattice,), lattice_weights=(1.0,), pixel_size=(pixel_size, pixel_size))
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        base = sample_conditions(rng, fixed)
        out.append(DigitalTwin(seed + i, DriftSchedule(base=base), shape).acquire(0).image)
    return out


def regime_vote(
    frames: Sequence[np.ndarray],
    pixel_size: float,
    lattice: str,
    regimes: Mapping[str, ConditionRanges],
    *,
    renders: int = RENDERS,
    neighbours: int = NEIGHBOURS,
    seed: int = 0,
) -> RegimeVote:
    """Vote on which of ``regimes`` (name → condition ranges) ``frames`` were imaged in.

    ``pixel_size`` in Å/px; ``lattice`` a twin lattice name (the one the frames' columns show).
    Costs ``renders`` twin frames per regime of the frames' shape (~3 ms each at 128² px).
    """
    if not regimes:
        raise ValueError("no regimes to vote between")
    if not frames:
        raise ValueError("no frames to vote on")
    shape = tuple(np.asarray(frames[0]).shape)
    names = list(regimes)
    stats, labels = [], []
    for j, name in enumerate(names):
        for image in _renders(regimes[name], lattice, pixel_size, shape, renders, seed + 7919 * j):
            stats.append(frame_statistics(image, pixel_size))
            labels.append(j)
    table = np.array(stats)
    centre, scale = table.mean(axis=0), table.std(axis=0) + 1e-9
    table = (table - centre) / scale
    label_arr = np.array(labels)
    votes = np.zeros(len(names))
    k = min(neighbours, len(table))
    for frame in frames:
        z = (frame_statistics(np.asarray(frame), pixel_size) - centre) / scale
        nearest = np.argsort(((table - z) ** 2).sum(axis=1), kind="stable")[:k]
        votes += np.bincount(label_arr[nearest], minlength=len(names))
    shares = votes / votes.sum()
    return RegimeVote(
        names[int(np.argmax(shares))], {n: float(s) for n, s in zip(names, shares, strict=True)}
    )
