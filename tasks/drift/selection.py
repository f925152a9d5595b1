"""Label-free selection of the ensemble members that still work under the current conditions.

Each member is scored on the recent frames by (a) its agreement with the consensus of the
whole ensemble (F1 of its columns against the consensus columns, one-to-one within a
radius) and (b) the physics proxies of its own columns against the reference ones. Members
close to the best score are kept; at least ``min_members``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.inference.metrics import match

from .physics import Proxies, frame_proxies, proxy_score


@dataclass(frozen=True)
class Selection:
    """Members kept (indices into the ensemble) and every member's score (higher is better)."""

    members: tuple[int, ...]
    scores: tuple[float, ...]
    agreement: tuple[float, ...]
    proxy_deviation: tuple[float, ...]


def _f1(found: np.ndarray, reference: np.ndarray, radius: float) -> float:
    if len(found) == 0 and len(reference) == 0:
        return 1.0
    pairs, _ = match(found, reference, radius)
    return 2.0 * len(pairs) / max(len(found) + len(reference), 1)


def select_members(
    member_atoms: Sequence[Sequence[np.ndarray]],
    consensus: Sequence[np.ndarray],
    shape: tuple[int, int],
    pixel_size: float,
    reference: Proxies,
    *,
    radius: float = 0.5,
    margin: float = 0.05,
    min_members: int = 2,
) -> Selection:
    """Choose members from their columns on recent frames (``member_atoms[m][f]`` (n, 2) px).

    ``consensus[f]`` are the full ensemble's columns, ``radius`` the match distance in Å,
    ``margin`` how far below the best score a member may be and still be kept.
    """
    agreement, deviation = [], []
    for frames in member_atoms:
        agreement.append(
            float(np.mean([_f1(a, c, radius / pixel_size) for a, c in zip(frames, consensus, strict=True)]))
        )
        deviation.append(
            float(np.mean([proxy_score(frame_proxies(a, shape, pixel_size), reference) for a in frames]))
        )
    scores = np.array(agreement) - 0.5 * np.array(deviation)
    order = np.argsort(-scores, kind="stable")
    keep = [int(m) for m in order if scores[m] >= scores[order[0]] - margin]
    for m in order:
        if len(keep) >= min(min_members, len(order)):
            break
        if int(m) not in keep:
            keep.append(int(m))
    return Selection(
        tuple(sorted(keep)),
        tuple(float(s) for s in scores),
        tuple(agreement),
        tuple(deviation),
    )
