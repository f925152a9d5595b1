"""One retraining run after drift: estimate → fine-tune → validate → register → promote or refuse.

A candidate is promoted to ``production`` only if it beats production on frames of the new
conditions and loses at most ``MAX_REFERENCE_LOSS`` F1 on the reference conditions;
otherwise production stays and the outcome says why. Validation frames are twin frames
with exact truth (the microscope's own frames have none); the twin's view is checked on the
microscope's own frames without labels: the candidate's columns on the first drifted frames
must agree with the sample's columns seen before the drift at least as well as production's
(``agreement``; on a new region, where nothing was seen before, by the lattice proxies).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow.atoms import Atoms
from storage.datasets import Dataset, open_dataset
from storage.models import ModelRegistry
from tasks.drift.physics import Proxies, columns_proxies, frame_proxies, proxy_score
from tasks.inference.ensemble import Ensemble
from tasks.inference.registry import load_ensemble, save_ensemble

from .agreement import drift_per_frame, sample_agreement
from .evaluation import condition_frames, score_ensemble
from .finetune import fine_tune, pseudo_labels
from .matching import estimate_conditions, lattice_columns, lattice_from_columns
from .train import Log

MAX_REFERENCE_LOSS = 0.01
MAX_FRAMES = 24  # drifted frames used for pseudo-labels and estimation


@dataclass
class RetrainOutcome:
    """What a retraining run did: the candidate version, whether it was promoted, and why."""

    candidate: str | None
    promoted: bool
    reason: str
    production: str
    metrics: dict[str, Any] = field(default_factory=dict)


def retrain(
    dataset: str | Path,
    frame_start: int,
    frame_end: int,
    *,
    registry: ModelRegistry | None = None,
    members: Sequence[int] | None = None,
    reference: dict[str, Any] | None = None,
    steps: int | None = None,
    validation_frames: int = 6,
    seed: int = 0,
    log: Log = print,
) -> RetrainOutcome:
    """Retrain on frames ``frame_start``..``frame_end`` (dataset positions) of ``dataset``.

    ``members`` are the production members still trusted (the drift selection); their
    consensus gives the pseudo-labels. ``reference`` are the conditions production must not
    regress on (default: the twin's defaults). ``steps``: optimiser steps (default: the budget
    of the device production runs on, ``EdgeSettings.retrain_steps_for``).
    """
    registry = registry or ModelRegistry()
    production = load_ensemble("production", registry)
    ds = open_dataset(dataset)
    positions = np.unique(
        np.linspace(frame_start, frame_end, min(MAX_FRAMES, frame_end - frame_start + 1)).astype(int)
    )
    frames = list(ds["frames"].isel(frame=positions).values)
    pixel_size = float(np.median(ds["pixel_size"].isel(frame=positions).values))
    trusted = production.select(list(members)) if members else production
    # The sample is described by frames from before the drift, while production still worked:
    # columns found on the drifted frames are exactly what cannot be trusted.
    before = np.arange(max(0, frame_start - MAX_FRAMES), frame_start)
    reference_frames = list(ds["frames"].isel(frame=before).values) if len(before) else frames
    found = production.locate(reference_frames, [pixel_size] * len(reference_frames))
    reference_proxies = columns_proxies([a.rowcol for a in found], reference_frames, pixel_size)
    drifted = trusted.locate(frames, [pixel_size] * len(frames))
    before_proxies = reference_proxies
    lattice, reference_proxies = _sample_lattice(drifted, frames, pixel_size, reference_proxies)
    # The frames before the drift are the spectrum's reference only while the sample is the
    # same: a new region's spectrum differs by its object, not by the optics.
    same_sample = reference_proxies is before_proxies and len(before) > 0
    conditions, how = estimate_conditions(
        frames,
        pixel_size,
        lattice,
        reference_frames=reference_frames if same_sample else None,
        reference=reference,
        optics=Dataset(dataset).optics(),
        seed=seed,
    )
    log(
        "estimated conditions: "
        + ", ".join(f"{k} {conditions[k]:.3g}" for k in ("dose", "defocus", "source_size", "contamination"))
        + f" (lattice {lattice}; "
        + "; ".join(f"{k}: {v}" for k, v in how.items())
        + ")"
    )
    pseudo = pseudo_labels(trusted, frames, pixel_size, patch=64, seed=seed, atoms=drifted)
    log(f"{len(pseudo)} pseudo-labelled patches from {len(frames)} drifted frames")
    candidate, lineage = fine_tune(production, pseudo, conditions, steps=steps, seed=seed, log=log)

    new = condition_frames("new", conditions, n=validation_frames, seed=seed + 77)
    ref = condition_frames("reference", reference or {}, n=validation_frames, seed=seed + 78)
    f1 = {
        "new_production": score_ensemble(production, new).f1,
        "new_candidate": score_ensemble(candidate, new).f1,
        "reference_production": score_ensemble(production, ref).f1,
        "reference_candidate": score_ensemble(candidate, ref).f1,
    }
    if same_sample:
        # Label-free, on the microscope's own frames: how well each model's columns on the
        # first drifted frames agree with the sample's columns found before the drift (F1,
        # higher is better; see ``agreement``).
        after = np.arange(frame_start, min(frame_end + 1, frame_start + MAX_FRAMES))
        after_frames = list(ds["frames"].isel(frame=after).values)
        columns = [a.rowcol for a in found]
        drift = drift_per_frame(columns, before_proxies.nn_distance / pixel_size)
        for name, model in (("production", production), ("candidate", candidate)):
            f1[f"agreement_{name}"] = sample_agreement(
                [a.rowcol for a in model.locate(after_frames, [pixel_size] * len(after))],
                after - before[-1],
                columns[-1],
                drift,
                after_frames[0].shape,
                pixel_size,
            )
    else:
        # A new region: nothing seen before to compare with, only how lattice-like each
        # model's columns are against the lattice the drifted frames show (lower is better).
        f1["proxy_production"] = _proxy_deviation(production, frames, pixel_size, reference_proxies)
        f1["proxy_candidate"] = _proxy_deviation(candidate, frames, pixel_size, reference_proxies)
    log("validation: " + ", ".join(f"{k} {v:.4f}" for k, v in f1.items()))
    lineage.update({"dataset": str(Path(dataset).resolve()), "frames": [int(frame_start), int(frame_end)]})
    version = save_ensemble(
        registry,
        candidate,
        lineage=lineage,
        # validation_f1 as every trained version records it (reference conditions), for `models list`.
        metrics={"validation_f1": f1["reference_candidate"], "validation": f1, "conditions": conditions},
        parent=production.version,
    )
    registry.promote(version, "candidate")
    promote, reason = verdict(f1)
    if promote:
        registry.promote(version, "production")
    return RetrainOutcome(
        version,
        promote,
        reason,
        version if promote else production.version,
        {"validation": f1, "conditions": conditions},
    )


SAMPLE_CHANGE = 0.1  # relative change of the column spacing that means a new sample region


def _sample_lattice(
    found: list[Atoms], frames: list[np.ndarray], pixel_size: float, before: Proxies
) -> tuple[str, Proxies]:
    """The lattice to render the new conditions with, and the proxies that the models'
    columns on the drifted frames should show; ``found`` are the trusted members' columns.

    Imaging drift (dose, focus) leaves the sample as it was, and columns found before the
    drift describe it best. But when the trusted members' columns on the drifted frames are
    spaced differently by more than ``SAMPLE_CHANGE`` the sample itself changed (a new
    lattice region), and only the drifted frames can say which lattice it is: validating on
    the old one would judge a candidate on the wrong sample. The proxies are then what the
    new lattice implies, not what the trusted (drifted) members found.
    """
    after = columns_proxies([a.rowcol for a in found], frames, pixel_size)
    changed = np.isfinite(after.nn_distance) and (
        abs(after.nn_distance / before.nn_distance - 1.0) > SAMPLE_CHANGE
    )
    if not changed:
        return lattice_from_columns(before.nn_distance, before.density), before
    lattice = lattice_from_columns(after.nn_distance, after.density)
    spacing, density = lattice_columns(lattice)
    return lattice, Proxies(density, spacing, before.irregularity)


def _proxy_deviation(
    ensemble: Ensemble, frames: list[np.ndarray], pixel_size: float, reference: Proxies
) -> float:
    found = ensemble.locate(frames, [pixel_size] * len(frames))
    return float(
        np.median(
            [
                proxy_score(frame_proxies(a.rowcol, f.shape, pixel_size), reference)
                for a, f in zip(found, frames, strict=True)
            ]
        )
    )


def verdict(f1: dict[str, float]) -> tuple[bool, str]:
    """Promote or not, and why, from validation F1 (keys ``new_``/``reference_`` + ``production``/``candidate``).

    A candidate must beat production on the new conditions and lose at most
    ``MAX_REFERENCE_LOSS`` on the reference ones: a worse model never reaches production.
    """
    beats = f1["new_candidate"] > f1["new_production"]
    keeps = f1["reference_candidate"] >= f1["reference_production"] - MAX_REFERENCE_LOSS
    # The twin validation trusts the estimated conditions; the real drifted frames must agree:
    # by the sample's columns seen before the drift where it is the same sample, else by the
    # lattice proxies.
    if "agreement_candidate" in f1:
        fits = f1["agreement_candidate"] >= f1["agreement_production"]
    else:
        fits = f1.get("proxy_candidate", 0.0) <= f1.get("proxy_production", 0.0)
    if beats and keeps and fits:
        return True, (
            f"promoted: F1 on the new conditions {f1['new_production']:.4f} → {f1['new_candidate']:.4f}, "
            f"reference {f1['reference_production']:.4f} → {f1['reference_candidate']:.4f}"
        )
    why = []
    if not beats:
        why.append(f"no gain on the new conditions ({f1['new_candidate']:.4f} ≤ {f1['new_production']:.4f})")
    if not fits and "agreement_candidate" in f1:
        why.append(
            f"its columns on the drifted frames agree worse with the sample's before the drift "
            f"(F1 {f1['agreement_candidate']:.3f} < {f1['agreement_production']:.3f})"
        )
    elif not fits:
        why.append(
            f"its columns on the drifted frames fit the sample's lattice worse "
            f"(proxy deviation {f1['proxy_candidate']:.3f} > {f1['proxy_production']:.3f})"
        )
    if not keeps:
        why.append(
            f"reference F1 would drop by {f1['reference_production'] - f1['reference_candidate']:.4f} "
            f"(> {MAX_REFERENCE_LOSS})"
        )
    return False, "kept production: " + "; ".join(why)
