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
    # Optimiser steps of a drift retraining (tasks/training/retrain.py's default): minutes on
    # the edge CPU; the promotion gate, not the step count, guards against a worse model.
    retrain_steps: int = 120
    # torch intra-op threads at most: the edge box has 2 cores, and more threads than cores
    # makes small convolutions slower, not faster.
    max_threads: int = 2

    def __post_init__(self) -> None:
        for name in ("window", "reference_frames", "batch_size", "retrain_steps", "max_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not self.ert > 0:
            raise ValueError(f"ert must be > 0 frames, got {self.ert}")


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
