"""Twin frames/s (256², 2 threads) and Zarr append throughput vs numpy.save of the same bytes.

The yardstick: ``numpy.save`` of the frames, a file each, interleaved batch by batch with the
dataset's append in the same directory. ``numpy.save`` alone drifted from 2500 to 665–1130 MB/s
over minutes in one directory (file creation where many files were just created and deleted,
and the dirty pages of earlier rounds still being written back), so every round starts in a
brand-new directory after ``os.sync()`` (untimed), and the figures are medians: of the rounds'
ratios, and of the per-batch times pooled over every round. The yardstick's own speed in the
first and the last rounds is recorded to show whether it held. A second yardstick writes the
same bytes with ``numpy.save`` into one file per batch (as few file creations as the dataset's
shards), since what decays is creating files. Each step's process CPU time (all threads, user
and system) is recorded too: on a loaded machine wall times swing with scheduling, CPU much less.
Frames are stored uncompressed; the frames array alone is also timed under the codec used before
(lz4 after a bit shuffle), for what compressing on the acquisition path would cost.

Run: ``.venv/bin/python benchmarks/acquire.py``; writes benchmarks/results/acquire.json.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import write_result

from storage.datasets import DatasetWriter
from storage.datasets.dataset import COUNTS_CODEC
from storage.datasets.file_writes import SPARE
from storage.datasets.tables import Table, commit, open_root
from tasks.acquisition.twin import DigitalTwin, DriftSchedule

FRAMES = 256
BATCH = 32
ROUNDS = int(os.environ.get("ACQUIRE_ROUNDS", 9))
# The frame codec of datasets written before frames were stored uncompressed (2026-11-30).


def twin_rate() -> float:
    twin = DigitalTwin(seed=0, schedule=DriftSchedule.parse("standard"))
    twin.acquire(0)  # warm the probe cache
    t0 = time.perf_counter()
    for i in range(1, FRAMES + 1):
        twin.acquire(i)
    return FRAMES / (time.perf_counter() - t0)


ABTEM = Path("/work/shared/data/abtem-graphene")  # evaluation frames nobody here made
# The shipped twin's doses (e/Å²): the default, the low-dose members' lower training edge's
# neighbour (2e5) and the `demo`/`standard` drop (4e4).
TWIN_DOSES = (5e6, 2e5, 4e4)


def codec_figures() -> dict[str, dict[str, float | bool]]:
    """What the former frame codec (lz4 after a bit shuffle, clevel 1) saves and costs per frame,
    one thread: the twin's frames at its shipped doses and, where present, the abTEM HAADF
    frames (detector counts). ``integer``: every pixel an exact integer (lossless as counts)."""
    from numcodecs import Blosc

    codec = Blosc("lz4", 1, Blosc.BITSHUFFLE)
    sets: dict[str, list[np.ndarray]] = {}
    for dose in TWIN_DOSES:
        twin = DigitalTwin(seed=0, schedule=DriftSchedule.parse(f"dose={dose:g}@0"))
        sets[f"twin dose {dose:g}"] = [twin.acquire(i).image for i in range(16)]
    for path in sorted(ABTEM.glob("haadf_*.npy")):
        sets[f"abtem {path.stem}"] = [np.ascontiguousarray(np.load(path), dtype=np.float32)]
    out: dict[str, dict[str, float | bool]] = {}
    for name, images in sets.items():
        spent = []
        for _ in range(5):
            t0 = time.perf_counter()
            encoded = [codec.encode(img) for img in images]
            spent.append((time.perf_counter() - t0) / len(images))
        out[name] = {
            "shape": list(images[0].shape),
            "bytes_ratio": round(sum(i.nbytes for i in images) / sum(len(e) for e in encoded), 3),
            "encode_ms_per_frame": round(1000 * min(spent), 4),
            "integer": all(bool(np.all(i == np.rint(i))) for i in images),
        }
    return out


def append_vs_save(frames: list, workdir: Path, round_no: int) -> dict[str, float]:
    """One round over the frames, batch by batch: ``numpy.save`` of each frame to its own file,
    the dataset writer's append (frames, conditions, truth, commit), and the frames array alone
    (the way the dataset writes it: same layout, codec, metadata and commit; and under the
    former lz4 codec, for what compressing would cost). They take turns within every batch, in
    an order that rotates, so a shared machine's load falls on all of them alike; the dataset's creation (once per run) is
    timed apart."""
    nbytes = sum(f.image.nbytes for f in frames)
    npy_dir = workdir / "npy"
    npy_dir.mkdir()
    t0 = time.perf_counter()
    writer = DatasetWriter.open(workdir / "bench.zarr", {"kind": "bench"})
    creation_s = time.perf_counter() - t0
    tables = {}
    for name, codec in (("frames", None), ("frames_lz4", COUNTS_CODEC)):
        open_root(workdir / f"{name}.zarr", create=True)
        tables[name] = Table(
            open_root(workdir / f"{name}.zarr", create=False),
            "frame",
            chunk_rows={"frames": 1},
            compressors={"frames": codec},
        )
    spent = {"numpy": 0.0, "numpy_one_file": 0.0, "dataset": 0.0, "frames": 0.0, "frames_lz4": 0.0}

    def save(batch: list) -> None:
        for f in batch:
            np.save(npy_dir / f"{f.index}.npy", f.image)

    def save_one_file(batch: list) -> None:
        # The same bytes, a file per batch (the frames one after another): a yardstick that
        # creates as few files as the dataset's shards do.
        with open(npy_dir / f"batch-{batch[0].index}.npy", "wb") as fh:
            for f in batch:
                np.save(fh, f.image)

    def frames_only(name: str) -> Callable[[list], None]:
        def append(batch: list) -> None:
            tables[name].append({"frames": [f.image for f in batch]})
            path = workdir / f"{name}.zarr"
            commit(path, tables[name].metadata(), spare=path / "frames" / SPARE)

        return append

    steps = {
        "numpy": save,
        "numpy_one_file": save_one_file,
        "dataset": writer.append,
        "frames": frames_only("frames"),
        "frames_lz4": frames_only("frames_lz4"),  # the same compressed: what the codec costs
    }
    order = list(steps)
    per_batch: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for b in range(0, len(frames), BATCH):
        batch = frames[b : b + BATCH]
        turn = (b // BATCH + round_no) % len(order)
        for name in order[turn:] + order[:turn]:
            c0, t0 = time.process_time(), time.perf_counter()
            steps[name](batch)
            per_batch[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            spent[name] += per_batch[name][-1]
    for p in (workdir / "bench.zarr", npy_dir, workdir / "frames.zarr", workdir / "frames_lz4.zarr"):
        shutil.rmtree(p)
    return {
        "zarr_MBps": nbytes / spent["dataset"] / 1e6,
        "npy_MBps": nbytes / spent["numpy"] / 1e6,
        "ratio": spent["numpy"] / spent["dataset"],
        "ratio_one_file": spent["numpy_one_file"] / spent["dataset"],
        "ratio_with_creation": spent["numpy"] / (spent["dataset"] + creation_s),
        # The whole append of a new dataset: its creation and every batch, the first one (which
        # creates its columns) included, against the steady yardstick.
        "ratio_one_file_with_creation": spent["numpy_one_file"] / (spent["dataset"] + creation_s),
        "creation_s": creation_s,
        "frames_only_ratio": spent["numpy"] / spent["frames"],
        "frames_only_lz4_ratio": spent["numpy"] / spent["frames_lz4"],
        "batch_seconds": per_batch,
        "batch_cpu_seconds": cpu,
    }


def main() -> None:
    import torch

    torch.set_num_threads(2)
    rate = twin_rate()
    codecs = codec_figures()
    twin = DigitalTwin(seed=0)
    frames = [twin.acquire(i) for i in range(FRAMES)]
    rounds = []
    load_before = os.getloadavg()
    # Same disk as the repository: the figure is about this file system, not /tmp.
    for i in range(ROUNDS):
        os.sync()  # the previous round's dirty pages are not this round's cost
        with tempfile.TemporaryDirectory(dir=Path(__file__).parent, prefix=".acquire-") as tmp:
            rounds.append(append_vs_save(frames, Path(tmp), i))
    load_after = os.getloadavg()
    ratio = statistics.median(r["ratio"] for r in rounds)
    pooled = {
        name: statistics.median(t for r in rounds for t in r["batch_seconds"][name])
        for name in rounds[0]["batch_seconds"]
    }
    pooled_cpu = {
        name: statistics.median(t for r in rounds for t in r["batch_cpu_seconds"][name])
        for name in rounds[0]["batch_cpu_seconds"]
    }
    nbytes_batch = sum(f.image.nbytes for f in frames[:BATCH])
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
            "frames_array_only_lz4_bitshuffle_vs_numpy_ratio": round(
                statistics.median(r["frames_only_lz4_ratio"] for r in rounds), 3
            ),
            "batch_median_ms": {name: round(1000 * t, 3) for name, t in pooled.items()},
            "batch_median_cpu_ms": {name: round(1000 * t, 3) for name, t in pooled_cpu.items()},
            # The same ratio in process CPU time (what the append costs the edge box's cores).
            "zarr_vs_numpy_one_file_per_batch_cpu_ratio": round(
                pooled_cpu["numpy_one_file"] / pooled_cpu["dataset"], 3
            ),
            "zarr_vs_numpy_ratio_batch_medians": round(pooled["numpy"] / pooled["dataset"], 3),
            "zarr_vs_numpy_one_file_per_batch_ratio": round(
                statistics.median(r["ratio_one_file"] for r in rounds), 3
            ),
            "zarr_vs_numpy_one_file_per_batch_ratio_with_creation": round(
                statistics.median(r["ratio_one_file_with_creation"] for r in rounds), 3
            ),
            "first_batch_median_ms": {
                name: round(1000 * statistics.median(r["batch_seconds"][name][0] for r in rounds), 3)
                for name in rounds[0]["batch_seconds"]
            },
            "zarr_vs_numpy_one_file_per_batch_ratio_batch_medians": round(
                pooled["numpy_one_file"] / pooled["dataset"], 3
            ),
            "frames_array_only_vs_numpy_ratio_batch_medians": round(pooled["numpy"] / pooled["frames"], 3),
            "numpy_save_MBps_first_last_round": [
                round(rounds[0]["npy_MBps"], 1),
                round(rounds[-1]["npy_MBps"], 1),
            ],
            "numpy_save_MBps_batch_median": round(nbytes_batch / pooled["numpy"] / 1e6, 1),
            "loadavg_before_after": [round(v, 2) for v in (*load_before, *load_after)],
            "ratio_goal": 0.8,
            "former_frame_codec_lz4_bitshuffle": codecs,
            "rounds": [
                {k: v for k, v in r.items() if k not in ("batch_seconds", "batch_cpu_seconds")}
                for r in rounds
            ],
        },
    )


if __name__ == "__main__":
    main()
