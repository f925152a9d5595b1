"""Label-free acceptance of a retrained model: do its columns agree with the sample as seen before?

A change of focus or dose changes the optics, not the sample: the columns a working model
found on the last frames before the drift are still where the sample's columns are, moved only
by the stage's slow drift. So the columns a model finds on the first drifted frames can be
scored against those (F1 within the same 0.5 Å as against truth), after shifting them by the
drift measured on the frames before (where production still worked).

This replaces judging a model by how lattice-like its columns look (density, spacing,
regularity against the reference): under strong defocus production still finds a lattice of
the right spacing and density, just not at the sample's columns (on the twin at 130 Å: F1
0.54 with a deviation as small as that of a candidate at F1 0.74), so that score could not tell
the two apart. Where the sample itself changed (a new region) there is nothing to compare with,
and the caller falls back to the lattice proxies.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from tasks.drift.physics import EDGE_MARGIN
from tasks.inference.metrics import MATCH_DISTANCE, match


def drift_per_frame(columns: Sequence[np.ndarray], spacing_px: float) -> np.ndarray:
    """The sample's drift (row, col px per frame) from columns (n, 2) px found on consecutive frames.

    Each pair of consecutive frames is registered by the median displacement of its matched
    columns, matched within half the columns' spacing (``spacing_px``): a column then has at
    most one partner, and a drift of half a spacing per frame would smear the frame itself.
    """
    steps = []
    for a, b in pairwise(columns):
        pairs, _ = match(b, a, 0.5 * spacing_px)
        if len(pairs) >= 3:
            steps.append(np.median(np.asarray(b)[pairs[:, 0]] - np.asarray(a)[pairs[:, 1]], axis=0))
    return np.median(np.array(steps), axis=0) if steps else np.zeros(2)


def sample_agreement(
    found: Sequence[np.ndarray],
    offsets: Sequence[int],
    anchor: np.ndarray,
    drift: np.ndarray,
    shape: tuple[int, int],
    pixel_size: float,
) -> float:
    """F1 of columns ``found[i]`` (px) on frames ``offsets[i]`` frames after the anchor frame,
    against the anchor frame's columns ``anchor`` (px) moved by ``offsets[i] · drift`` px.

    Only the part of the field both frames see, away from its edges (``EDGE_MARGIN`` Å, where
    columns lose half their neighbours and the networks their context), is scored. Pooled over
    frames as ``evaluate`` pools: 2·matches / (found + anchor columns).
    """
    margin = EDGE_MARGIN / pixel_size
    hi = np.array(shape, float) - margin
    anchor = np.asarray(anchor, float).reshape(-1, 2)
    tp = total = 0
    for cols, k in zip(found, offsets, strict=True):
        shift = k * np.asarray(drift, float)
        lo_k, hi_k = np.maximum(margin, margin + shift), np.minimum(hi, hi + shift)
        moved = anchor + shift
        ref = moved[np.all((moved >= lo_k) & (moved <= hi_k), axis=1)]
        cols = np.asarray(cols, float).reshape(-1, 2)
        cols = cols[np.all((cols >= lo_k) & (cols <= hi_k), axis=1)]
        pairs, _ = match(cols, ref, MATCH_DISTANCE / pixel_size)
        tp += len(pairs)
        total += len(cols) + len(ref)
    return 2.0 * tp / total if total else 0.0
