"""Label-free selection of the ensemble members that still work under the current conditions.

An ensemble of specialists (members trained for regimes of conditions) gets the members of
the regime its frames vote for (``select_regime``), unless the vote is for the standard
conditions. Otherwise each member is scored on the recent frames by (a) its agreement with
the consensus of the whole ensemble (F1 of its columns against the consensus columns,
one-to-one within a radius) and (b) the physics proxies of its own columns against the
reference ones. Members close to the best score are kept; at least ``min_members``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tasks.inference.metrics import match

from .physics import Proxies, frame_proxies, proxy_score
from .regimes import RegimeVote


@dataclass(frozen=True)
class Selection:
    """Members kept (indices into the ensemble) and every member's score (higher is better).

    ``regime`` is set when the members were chosen as the specialists of the regime the frames
    vote for (``regimes.regime_vote``); each member's score is then its regime's share of the
    vote, and the per-member agreement and proxy deviation were not computed (empty).
    ``threshold``: the heatmap threshold the kept members decode at (None: the model's), the
    chosen regime's when it stores one.
    """

    members: tuple[int, ...]
    scores: tuple[float, ...]
    agreement: tuple[float, ...] = ()
    proxy_deviation: tuple[float, ...] = ()
    regime: RegimeVote | None = None
    threshold: float | None = None

    @property
    def regime_name(self) -> str | None:
        """The regime whose members were chosen (None: chosen by consensus)."""
        return self.regime.regime if self.regime is not None else None


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


def select_regime(
    regimes: Sequence[str],
    vote: RegimeVote,
    standard: Sequence[str],
    *,
    min_share: float = 0.5,
    thresholds: Mapping[str, float | None] | None = None,
) -> Selection | None:
    """The members of the regime ``vote`` chose (``regimes[k]`` is member k's regime name), or
    None when it chose a regime in ``standard`` or with less than ``min_share`` of the votes
    (then the consensus selection, ``select_members``, decides). ``thresholds``: each regime's
    stored heatmap threshold (``RegimeStatistics.threshold``); the chosen regime's goes with
    its members."""
    if vote.regime in standard or vote.shares.get(vote.regime, 0.0) < min_share:
        return None
    members = tuple(k for k, name in enumerate(regimes) if name == vote.regime)
    if not members:
        return None
    return Selection(
        members,
        tuple(vote.shares.get(name, 0.0) for name in regimes),
        regime=vote,
        threshold=(thresholds or {}).get(vote.regime),
    )
