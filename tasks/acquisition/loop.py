"""Taking frames from an instrument into a dataset, in committed batches (no Prefect needed)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scopeflow.errors import InputError
from scopeflow.frame import Frame
from scopeflow.settings import DEFAULTS
from storage.datasets import DatasetWriter
from tasks.embedding.ingest import AppendedEmbedder

from .instrument import Instrument


@dataclass(frozen=True)
class BatchResult:
    """Frames ``start``..``stop`` (exclusive) are committed; ``total`` frames are now stored."""

    start: int
    stop: int
    total: int
    seconds: float


def batches(start: int, stop: int, size: int) -> Iterator[tuple[int, int]]:
    """Consecutive (first, end) frame ranges of at most ``size`` frames covering [start, stop)."""
    if size < 1:
        raise ValueError(f"batch size must be ≥ 1, got {size}")
    for first in range(start, stop, size):
        yield first, min(first + size, stop)


def acquire_batch(instrument: Instrument, writer: DatasetWriter, first: int, end: int) -> BatchResult:
    """Acquire frames ``first``..``end-1`` and commit them as one batch."""
    import time

    t0 = time.perf_counter()
    frames: list[Frame] = [instrument.acquire(i) for i in range(first, end)]
    total = writer.append(frames)
    # Embeddings for similarity search, as the frames arrive (~3 ms a frame).
    AppendedEmbedder.for_writer(writer)(
        total - len(frames), [f.image for f in frames], [f.pixel_size for f in frames]
    )
    return BatchResult(first, end, total, time.perf_counter() - t0)


def check_target(dataset: str | Path, instrument: Instrument) -> int:
    """Refuse now a dataset this instrument could not append to (not a dataset, or acquired with
    other settings); creates nothing. Returns the frames already committed there."""
    path = Path(dataset)
    if not path.exists():
        return 0
    if not path.is_dir():
        raise InputError(f"{path} is a file, not a dataset directory")
    if not (path / "zarr.json").exists():
        if any(path.iterdir()):
            raise InputError(f"{path} exists and is not a scopeflow dataset (no zarr.json)")
        return 0
    return DatasetWriter.open(path, instrument.state()).n_frames


def acquire_run(
    instrument: Instrument,
    dataset: str,
    n_frames: int,
    batch_size: int = DEFAULTS.batch_size,
    on_batch: Callable[[BatchResult], None] | None = None,
    run_batch: Callable[[Instrument, DatasetWriter, int, int], BatchResult] = acquire_batch,
) -> int:
    """Fill ``dataset`` up to ``n_frames`` frames, resuming after the last committed one.

    Returns the number of frames stored. ``on_batch`` is called after every commit (for
    progress bars and artifacts); ``run_batch`` does one batch (a Prefect task in the flow).
    """
    created = not Path(dataset).exists()
    writer = DatasetWriter.open(dataset, instrument.state())
    resume = getattr(instrument, "resume", None)
    if resume is not None and writer.n_frames:
        resume(writer.sources())
    try:
        for first, end in batches(writer.n_frames, n_frames, batch_size):
            result = run_batch(instrument, writer, first, end)
            if on_batch:
                on_batch(result)
    except BaseException:
        # A dataset this call created and never committed a frame to would hold the failed
        # settings and refuse the corrected command: it goes, committed data never does.
        if created and writer.n_frames == 0:
            shutil.rmtree(dataset, ignore_errors=True)
        raise
    return writer.n_frames
