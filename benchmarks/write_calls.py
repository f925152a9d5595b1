"""How many bytes one write system call should carry: a batch of 32 raw 256² float32 frames
(8 MiB) written at an offset into a new file, in ``pwritev`` calls of 8, 4, 2, 1, ½ and ¼ MiB,
against ``numpy.save`` of the same frames into one file (its own writes are 256 KiB each).

The reason for ``storage.datasets.file_writes.WRITE_BYTES``: on this project's machines one call
that dirties many MiB of page cache at once was throttled as a whole (16 ms for 8 MiB against
1.6 ms in calls of 1 MiB, 2026-11-30). Each size runs 6 times in a rotating order, every write
into a new file in a fresh directory; medians in ms. Writes ``results/write_calls.json``.
Run: ``PYTHONPATH=. python benchmarks/write_calls.py``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import write_result

FRAMES = 32
SIZES_MIB = (8, 4, 2, 1, 0.5, 0.25)


def _pwritev(fd: int, views: list[memoryview], call_bytes: int) -> None:
    offset = 1024  # past a shard's index, as the dataset writes frames
    per_call = max(1, call_bytes // len(views[0]))
    for i in range(0, len(views), per_call):
        offset += os.pwritev(fd, views[i : i + per_call], offset)


def main() -> None:
    frames = [np.random.default_rng(i).normal(size=(256, 256)).astype(np.float32) for i in range(FRAMES)]
    views = [memoryview(f).cast("B") for f in frames]
    times: dict[str, list[float]] = {f"pwritev {s:g} MiB": [] for s in SIZES_MIB} | {"numpy.save": []}
    with tempfile.TemporaryDirectory(prefix="sf-bench-write-calls-") as tmp:
        for rnd in range(6):
            names = list(times)
            for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
                path = Path(tmp) / f"{name.replace(' ', '_')}-{rnd}"
                t0 = time.perf_counter()
                if name == "numpy.save":
                    with open(path, "wb") as fh:
                        for f in frames:
                            np.save(fh, f)
                else:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
                    try:
                        _pwritev(fd, views, int(float(name.split()[1]) * 2**20))
                    finally:
                        os.close(fd)
                times[name].append(time.perf_counter() - t0)
    medians = {name: round(statistics.median(t) * 1e3, 2) for name, t in times.items()}
    print(medians)
    write_result("write_calls", {"frames": FRAMES, "frame_bytes": 256 * 256 * 4, "median_ms": medians})


if __name__ == "__main__":
    main()
