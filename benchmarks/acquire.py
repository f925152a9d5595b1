"""Twin frames/s (256², 2 threads) and Zarr append throughput vs numpy.save of the same bytes.

Run: ``.venv/bin/python benchmarks/acquire.py``; writes benchmarks/results/acquire.json.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from _common import write_result

from storage.datasets import DatasetWriter
from storage.datasets.dataset import FRAME_CODEC
from storage.datasets.tables import DirectChunks
from tasks.acquisition.twin import DigitalTwin, DriftSchedule

FRAMES = 256
BATCH = 32
ROUNDS = 3


def twin_rate() -> float:
    twin = DigitalTwin(seed=0, schedule=DriftSchedule.parse("standard"))
    twin.acquire(0)  # warm the probe cache
    t0 = time.perf_counter()
    for i in range(1, FRAMES + 1):
        twin.acquire(i)
    return FRAMES / (time.perf_counter() - t0)


def append_vs_save(frames: list, workdir: Path) -> dict[str, float]:
    """One round: the dataset writer (frames, conditions, truth, commit) against np.save per frame."""
    nbytes = sum(f.image.nbytes for f in frames)
    ds_path = workdir / "bench.zarr"
    t0 = time.perf_counter()
    writer = DatasetWriter.open(ds_path, {"kind": "bench"})
    for b in range(0, len(frames), BATCH):
        writer.append(frames[b : b + BATCH])
    zarr_s = time.perf_counter() - t0
    npy_dir = workdir / "npy"
    npy_dir.mkdir()
    t0 = time.perf_counter()
    for f in frames:
        np.save(npy_dir / f"{f.index}.npy", f.image)
    npy_s = time.perf_counter() - t0
    # The frames array alone, written the way the dataset writes it (same chunks, codec and
    # direct chunk files), without conditions, truth or the commit.
    arr = zarr.open_group(workdir / "frames.zarr", mode="w").create_array(
        "frames",
        shape=(0, *frames[0].image.shape),
        dtype="float32",
        chunks=(1, *frames[0].image.shape),
        compressors=FRAME_CODEC,
    )
    direct = DirectChunks(FRAME_CODEC)
    images = np.stack([f.image for f in frames])
    t0 = time.perf_counter()
    for b in range(0, len(frames), BATCH):
        block = images[b : b + BATCH]
        direct.write(arr, b, block)
        arr.resize((b + len(block), *arr.shape[1:]))
    frames_s = time.perf_counter() - t0
    for p in (ds_path, npy_dir, workdir / "frames.zarr"):
        shutil.rmtree(p)
    return {
        "zarr_MBps": nbytes / zarr_s / 1e6,
        "npy_MBps": nbytes / npy_s / 1e6,
        "ratio": npy_s / zarr_s,
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
        for _ in range(ROUNDS):
            rounds.append(append_vs_save(frames, Path(tmp)))
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
            "frames_array_only_vs_numpy_ratio": round(
                statistics.median(r["frames_only_ratio"] for r in rounds), 3
            ),
            "ratio_goal": 0.8,
            "rounds": rounds,
        },
    )


if __name__ == "__main__":
    main()
