"""Twin frames/s (256², 2 threads) and Zarr append throughput vs numpy.save of the same bytes.

Run: ``.venv/bin/python benchmarks/acquire.py``; writes benchmarks/results/acquire.json.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import write_result

from storage.datasets import DatasetWriter
from storage.datasets.dataset import FRAME_CODEC
from storage.datasets.tables import Table, commit, open_root
from tasks.acquisition.twin import DigitalTwin, DriftSchedule

FRAMES = 256
BATCH = 32
ROUNDS = int(os.environ.get("ACQUIRE_ROUNDS", 9))  # alternating which of the dataset and numpy.save runs first (shared machine)


def twin_rate() -> float:
    twin = DigitalTwin(seed=0, schedule=DriftSchedule.parse("standard"))
    twin.acquire(0)  # warm the probe cache
    t0 = time.perf_counter()
    for i in range(1, FRAMES + 1):
        twin.acquire(i)
    return FRAMES / (time.perf_counter() - t0)


def _save(frames: list, folder: Path) -> float:
    """Seconds to ``numpy.save`` each frame to its own file (the reference)."""
    folder.mkdir()
    t0 = time.perf_counter()
    for f in frames:
        np.save(folder / f"{f.index}.npy", f.image)
    return time.perf_counter() - t0


def _append(frames: list, path: Path) -> tuple[float, float]:
    """(seconds to create the dataset, seconds to append every batch with its commit)."""
    t0 = time.perf_counter()
    writer = DatasetWriter.open(path, {"kind": "bench"})
    t1 = time.perf_counter()
    for b in range(0, len(frames), BATCH):
        writer.append(frames[b : b + BATCH])
    return t1 - t0, time.perf_counter() - t1


def _frames_only(frames: list, path: Path) -> float:
    """Seconds to append the frames array alone, the way the dataset writes it (same chunks,
    codec, chunk files, metadata and commit), without the per-frame columns or truth."""
    open_root(path, create=True)
    table = Table(
        open_root(path, create=False), "frame", chunk_rows={"frames": 1}, compressors={"frames": FRAME_CODEC}
    )
    images = np.stack([f.image for f in frames])
    t0 = time.perf_counter()
    for b in range(0, len(frames), BATCH):
        table.append({"frames": images[b : b + BATCH]})
        commit(path, table.metadata())
    return time.perf_counter() - t0


def append_vs_save(frames: list, workdir: Path, first: str) -> dict[str, float]:
    """One round: the dataset writer (frames, conditions, truth, commit), ``numpy.save`` of the
    same frames, and the frames array alone; ``first`` says which of the first two runs first."""
    nbytes = sum(f.image.nbytes for f in frames)
    if first == "numpy":
        npy_s = _save(frames, workdir / "npy")
        open_s, zarr_s = _append(frames, workdir / "bench.zarr")
    else:
        open_s, zarr_s = _append(frames, workdir / "bench.zarr")
        npy_s = _save(frames, workdir / "npy")
    frames_s = _frames_only(frames, workdir / "frames.zarr")
    for p in (workdir / "bench.zarr", workdir / "npy", workdir / "frames.zarr"):
        shutil.rmtree(p)
    return {
        "zarr_MBps": nbytes / zarr_s / 1e6,
        "npy_MBps": nbytes / npy_s / 1e6,
        "ratio": npy_s / zarr_s,
        "ratio_with_creation": npy_s / (zarr_s + open_s),
        "creation_s": open_s,
        "frames_only_ratio": npy_s / frames_s,
    }


def main() -> None:
    import torch

    torch.set_num_threads(2)
    rate = twin_rate()
    twin = DigitalTwin(seed=0)
    frames = [twin.acquire(i) for i in range(FRAMES)]
    rounds = []
    # Same disk as the repository: the figure is about this file system, not /tmp.
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        for i in range(ROUNDS):
            rounds.append(append_vs_save(frames, Path(tmp), "numpy" if i % 2 else "dataset"))
    ratio = statistics.median(r["ratio"] for r in rounds)
    write_result(
        "acquire",
        {
            "twin_frames_per_s_256": round(rate, 1),
            "twin_goal_frames_per_s": 20,
            "append_batch_frames": BATCH,
            "zarr_append_MBps": round(statistics.median(r["zarr_MBps"] for r in rounds), 1),
            "numpy_save_MBps": round(statistics.median(r["npy_MBps"] for r in rounds), 1),
            "zarr_vs_numpy_ratio": round(ratio, 3),
            "zarr_vs_numpy_ratio_with_creation": round(
                statistics.median(r["ratio_with_creation"] for r in rounds), 3
            ),
            "creation_s": round(statistics.median(r["creation_s"] for r in rounds), 4),
            "frames_array_only_vs_numpy_ratio": round(
                statistics.median(r["frames_only_ratio"] for r in rounds), 3
            ),
            "ratio_goal": 0.8,
            "rounds": rounds,
        },
    )


if __name__ == "__main__":
    main()
