"""How well located columns match the truth: one-to-one matching within a distance, F1, errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.spatial import cKDTree

MATCH_DISTANCE = 0.5  # Å: a found column within this of a true one is a hit (the rule)


@dataclass(frozen=True)
class Scores:
    """Detection scores over one or more frames; ``median_error`` in px of the input frames."""

    true_positives: int
    false_positives: int
    false_negatives: int
    median_error: float

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        real = self.true_positives + self.false_negatives
        return self.true_positives / real if real else 1.0

    @property
    def f1(self) -> float:
        total = 2 * self.true_positives + self.false_positives + self.false_negatives
        return 2 * self.true_positives / total if total else 1.0

    @classmethod
    def total(cls, parts: Sequence[Scores]) -> Scores | None:
        """The scores of several batches together (None for none): counts add up; the median
        error is the batches' medians weighted by their matches (px)."""
        if not parts:
            return None
        weights = [max(p.true_positives, 1) for p in parts]
        return cls(
            sum(p.true_positives for p in parts),
            sum(p.false_positives for p in parts),
            sum(p.false_negatives for p in parts),
            float(np.average([p.median_error for p in parts], weights=weights)),
        )

    def as_dict(self) -> dict[str, float]:
        """Counts, precision, recall, F1 and median error (px) as a JSON-able dict."""
        return asdict(self) | {"precision": self.precision, "recall": self.recall, "f1": self.f1}


def match(found: np.ndarray, truth: np.ndarray, max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs (i_found, i_truth) closer than ``max_distance``, nearest pairs first.

    Positions (n, 2) in any common unit. Greedy by distance: with the tolerance below half the
    columns' separation a column has at most one candidate, where greedy is optimal.
    Returns index pairs (m, 2) and their distances (m,).
    """
    found = np.asarray(found, np.float64).reshape(-1, 2)
    truth = np.asarray(truth, np.float64).reshape(-1, 2)
    if len(found) == 0 or len(truth) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    neighbours = cKDTree(truth).query_ball_point(found, max_distance)
    fi = np.repeat(np.arange(len(found)), [len(n) for n in neighbours])
    ti = np.fromiter((j for n in neighbours for j in n), np.int64, count=len(fi))
    dist = np.linalg.norm(found[fi] - truth[ti], axis=1)
    used_f = np.zeros(len(found), bool)
    used_t = np.zeros(len(truth), bool)
    pairs, dists = [], []
    for k in np.argsort(dist, kind="stable"):
        if not used_f[fi[k]] and not used_t[ti[k]]:
            used_f[fi[k]] = used_t[ti[k]] = True
            pairs.append((fi[k], ti[k]))
            dists.append(dist[k])
    return np.array(pairs, np.int64).reshape(-1, 2), np.array(dists)


def evaluate(
    found: Sequence[np.ndarray],
    truth: Sequence[np.ndarray],
    pixel_size: float | Sequence[float],
    max_distance: float = MATCH_DISTANCE,
) -> Scores:
    """Scores of found columns against the truth over frames (each (n, 2) in px of its frame).

    A match is within ``max_distance`` Å, one-to-one; ``median_error`` is over every matched
    column, in px of the input frames.
    """
    sizes = [float(pixel_size)] * len(found) if np.isscalar(pixel_size) else [float(p) for p in pixel_size]
    tp = fp = fn = 0
    errors = []
    for f, t, p in zip(found, truth, sizes, strict=True):
        pairs, dist = match(f, t, max_distance / p)
        tp += len(pairs)
        fp += len(np.asarray(f).reshape(-1, 2)) - len(pairs)
        fn += len(np.asarray(t).reshape(-1, 2)) - len(pairs)
        errors.append(dist)
    all_errors = np.concatenate(errors) if errors else np.zeros(0)
    return Scores(tp, fp, fn, float(np.median(all_errors)) if len(all_errors) else float("nan"))
