"""The edge loop's settings, in one place: the CLI, the flows and the tasks take them from here.

Plain data in the lowest layer (no torch, no Prefect): a frozen dataclass whose defaults each
carry the reason they are what they are. Override a field with ``dataclasses.replace`` or by
keyword (``EdgeSettings(batch_size=8)``); the defaults are ``DEFAULTS``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class EdgeSettings:
    """Drift monitoring, batching, retraining and thread settings of the edge loop."""

    # Expected frames between false drift alarms (the user's setting the thresholds are
    # calibrated from): at a frame a second, one false alarm per ~17 minutes of stationary scan.
    ert: float = 1000.0
    # Frames the drift detectors' test statistics are pooled over (the monitor's window).
    window: int = 10
    # Frames of the reference the monitor calibrates on after a start or a detection (widened
    # to 2x and 4x while the stream stays quiet): four batches, so a reference spans the
    # frame-to-frame wander the block bootstrap of tasks/drift/calibration.py resamples.
    reference_frames: int = 64
    # Frames per batch (one inference call, one decision, one commit): larger batches amortise
    # the commit; a decision comes at most a batch after the frame that shows the change.
    batch_size: int = 16
    # Seed of the monitor's random projections (the same seed, the same decisions).
    seed: int = 0
    # Optimiser steps of a drift retraining (tasks/training/retrain.py); None: the budget of
    # the device the retraining runs on (``retrain_steps_for``). The promotion gate, not the
    # step count, guards against a worse model.
    retrain_steps: int | None = None
    # torch intra-op threads at most: the edge box has 2 cores, and more threads than cores
    # makes small convolutions slower, not faster.
    max_threads: int = 2

    def __post_init__(self) -> None:
        for name in ("window", "reference_frames", "batch_size", "retrain_steps", "max_threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not self.ert > 0:
            raise ValueError(f"ert must be > 0 frames, got {self.ert}")

    def retrain_steps_for(self, device_type: str) -> int:
        """Optimiser steps of a retraining on a torch device of ``device_type`` ("cpu",
        "cuda", ...): ``retrain_steps`` when set, else that device's budget."""
        if self.retrain_steps is not None:
            return self.retrain_steps
        return RETRAIN_STEPS_CUDA if device_type == "cuda" else RETRAIN_STEPS_CPU


# A retraining's budget by device. Truth F1 on drift.py's stream (seeds 21 and 22) rises with
# every step added, at 130 Å defocus and at 4·10⁴ e/Å² alike, and more twin samples help on
# top (``finetune.twin_samples_for``): 0.76 / 0.87 / 0.92 / 0.94 at 120 / 1500 / 3000 / 6000
# steps at 130 Å, seed 21 (benchmarks/retrain_budget.py, README). No plateau was reached, so
# the budget is set by what a retraining may cost, not read off that curve. The cloud stage's
# GPU: 6000 steps and 6000 twin samples in 3 min on one H200 (samples rendered on 7
# processes). The edge CPU (2 cores) is shared with inference: there 120 steps took 2-4.5 min
# with the machine loaded (load ~10), 6000 steps 4 min with it quiet (load 2) — its cost
# follows the load, so the edge keeps the short run.
RETRAIN_STEPS_CPU = 120
RETRAIN_STEPS_CUDA = 6000

DEFAULTS = EdgeSettings()


def limit_threads(most: int = DEFAULTS.max_threads) -> int:
    """Set torch's intra-op threads to ``most``, never more than the machine's cores; returns it.

    One helper for the CLI, the flows and the dask workers. Imports torch lazily, so this
    module stays importable without it.
    """
    import torch

    threads = max(1, min(most, os.cpu_count() or most))
    torch.set_num_threads(threads)
    return threads
