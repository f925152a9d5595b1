"""Acquisition runs as Zarr v3 groups: crash-safe appends, plain-xarray reads."""

from .dataset import (
    FRAME_DIM,
    SCHEMA_VERSION,
    TRUTH_DIM,
    DatasetWriter,
    frame_count,
    open_dataset,
    read_truth,
    read_truths,
)
from .handle import Dataset
from .tables import Table, commit, repair

__all__ = [
    "FRAME_DIM",
    "SCHEMA_VERSION",
    "TRUTH_DIM",
    "Dataset",
    "DatasetWriter",
    "Table",
    "commit",
    "frame_count",
    "open_dataset",
    "read_truth",
    "read_truths",
    "repair",
]
