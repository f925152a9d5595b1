"""Which training regime recent frames were imaged in, from the frames and stored statistics.

A specialist ensemble has members trained for regimes of imaging conditions (low dose,
strong defocus). Member selection can only pick them if it can tell which regime the
microscope is in now, and the members' own outputs cannot tell it. The frames can: each
frame's spectrum ``signature`` (counts per Å², contrast, high-frequency share) is compared with
the signatures measured on each regime's training frames when the specialists were made,
stored with the model (``RegimeStatistics``; no simulator runs at decision time). Each frame
votes for the regime under which its signature is most likely (a Gaussian per regime).

A regime may also carry the heatmap threshold its members decode at (``threshold``), chosen
when the specialists were made on validation frames drawn from the regime's own training
ranges (``tasks.training.specialists.regime_thresholds``): the threshold chosen on the
standard ranges is far from the best one under low dose or strong defocus, where the
members' heatmaps are weaker. A regime stored without one decodes at the model's threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scopeflow.errors import InputError

from .spectrum import SIGNATURE, ImageStats, signature

SCHEMA = 1


@dataclass(frozen=True)
class RegimeStatistics:
    """One regime's signature distribution on its training frames: mean (3,), covariance (3, 3),
    frames measured, and whether it is the standard conditions. ``threshold``: the heatmap
    threshold (0–1) its members decode at when the edge selects them (None: the model's)."""

    mean: np.ndarray
    cov: np.ndarray
    frames: int
    standard: bool
    threshold: float | None = None

    @classmethod
    def measure(cls, images: Sequence[ImageStats], standard: bool) -> RegimeStatistics:
        """The statistics of a regime from spectrum summaries of its training frames."""
        sig = np.stack([signature(s) for s in images])
        # A covariance from n frames, with each diagonal kept at least the squared spread of
        # the mean (so one degenerate statistic cannot make a regime infinitely sharp).
        cov = np.cov(sig, rowvar=False) + np.diag(sig.var(axis=0) / len(sig) + 1e-12)
        return cls(sig.mean(axis=0), cov, len(sig), standard)

    def as_dict(self) -> dict[str, Any]:
        """JSON form (for the model's manifest or the file beside it)."""
        out: dict[str, Any] = {
            "mean": self.mean.tolist(),
            "cov": self.cov.tolist(),
            "frames": self.frames,
            "standard": self.standard,
        }
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RegimeStatistics:
        """Back from ``as_dict`` (a regime stored before thresholds were has none)."""
        threshold = d.get("threshold")
        if threshold is not None and not 0.0 < float(threshold) < 1.0:
            raise InputError(f"a regime's heatmap threshold must be in (0, 1), got {threshold!r}")
        return cls(
            np.asarray(d["mean"], float),
            np.asarray(d["cov"], float),
            int(d["frames"]),
            bool(d["standard"]),
            None if threshold is None else float(threshold),
        )

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        """Gaussian log-likelihood of signatures x (n, 3)."""
        diff = np.atleast_2d(x) - self.mean
        inv = np.linalg.inv(self.cov)
        _, logdet = np.linalg.slogdet(self.cov)
        return -0.5 * (np.einsum("ni,ij,nj->n", diff, inv, diff) + logdet)


def statistics_document(
    regimes: Mapping[str, RegimeStatistics], thresholds: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The stored form: schema, signature names and each regime's statistics; ``thresholds``,
    how the regimes' thresholds were chosen (kept as ``"threshold_calibration"``)."""
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "signature": list(SIGNATURE),
        "regimes": {name: r.as_dict() for name, r in regimes.items()},
    }
    if thresholds is not None:
        out["threshold_calibration"] = dict(thresholds)
    return out


def read_statistics(document: Mapping[str, Any] | None) -> dict[str, RegimeStatistics]:
    """Regime statistics from their stored form ({} when none or of another schema)."""
    if (
        not document
        or document.get("schema") != SCHEMA
        or list(document.get("signature", [])) != list(SIGNATURE)
    ):
        return {}
    return {name: RegimeStatistics.from_dict(d) for name, d in document["regimes"].items()}


@dataclass(frozen=True)
class RegimeVote:
    """The regime most of the recent frames voted for, and every regime's share of the votes."""

    regime: str
    shares: dict[str, float]


def regime_vote(images: Sequence[ImageStats], regimes: Mapping[str, RegimeStatistics]) -> RegimeVote:
    """Vote on which of ``regimes`` the frames summarised by ``images`` were imaged in."""
    if not regimes:
        raise ValueError("no regimes to vote between")
    if not images:
        raise ValueError("no frames to vote on")
    names = list(regimes)
    sig = np.stack([signature(s) for s in images])
    ll = np.stack([regimes[n].log_likelihood(sig) for n in names], axis=1)  # (frames, regimes)
    votes = np.bincount(np.argmax(ll, axis=1), minlength=len(names)).astype(float)
    shares = votes / votes.sum()
    return RegimeVote(
        names[int(np.argmax(shares))], {n: float(s) for n, s in zip(names, shares, strict=True)}
    )
