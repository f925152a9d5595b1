"""End-to-end loop latency per frame (acquired → atoms + drift decision committed) and Prefect's share.

The plain-Python loop and the Prefect flow run the same batches on the same twin stream, one
after the other; Prefect's share is 1 − (plain time / flow time). Run:
``.venv/bin/python benchmarks/loop.py [--frames 160] [--batch 4]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import write_result

from scopeflow.settings import EdgeSettings
from storage.datasets import DatasetWriter
from storage.models import ModelRegistry
from tasks.acquisition import make_instrument
from tasks.drift.edge_loop import EdgeLoop, run_adaptive_edge
from tasks.inference.registry import load_ensemble


def plain_loop(path: Path, frames: int, batch: int, registry: ModelRegistry) -> tuple[list[float], float]:
    """Latencies (s) of every frame and the total time, without Prefect."""
    instrument = make_instrument("twin", seed=0, drift=None)  # stationary: no retraining in either run
    writer = DatasetWriter.open(path, instrument.state())
    settings = EdgeSettings(batch_size=batch)
    loop = EdgeLoop(path, load_ensemble("production", registry), registry=registry, settings=settings)
    latencies: list[float] = []
    t_start = time.perf_counter()
    for first in range(0, frames, batch):
        acquired = []
        stamps = []
        for i in range(first, min(first + batch, frames)):
            acquired.append(instrument.acquire(i))
            stamps.append(time.perf_counter())
        writer.append(acquired)
        run_adaptive_edge(path, loop=loop, stop_at=first + len(acquired))
        done = time.perf_counter()
        latencies += [done - s for s in stamps]
    return latencies, time.perf_counter() - t_start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=160)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(2)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    work = Path(tempfile.mkdtemp(prefix="loop-bench-"))
    os.environ.setdefault("SCOPEFLOW_HOME", str(work / "home"))  # Prefect's and the store's files
    try:
        registry = ModelRegistry(work / "registry")
        latencies, plain_s = plain_loop(work / "plain.zarr", args.frames, args.batch, registry)
        from flows.loop import loop_flow

        loop_flow(
            frames=8, dataset=str(work / "warm.zarr"), drift=None, batch_size=8, publish=False
        )  # server start
        t0 = time.perf_counter()
        loop_flow(
            frames=args.frames,
            dataset=str(work / "flow.zarr"),
            drift=None,
            batch_size=args.batch,
            registry=str(work / "registry-flow"),
            publish=False,
        )
        flow_s = time.perf_counter() - t0
        lat = np.array(latencies) * 1000
        write_result(
            "loop",
            {
                "frames": args.frames,
                "frame_shape": [256, 256],
                "batch_frames": args.batch,
                "latency_ms_p50": float(np.percentile(lat, 50)),
                "latency_ms_p95": float(np.percentile(lat, 95)),
                "latency_goal_ms_p95": 250,
                "plain_seconds": plain_s,
                "prefect_flow_seconds": flow_s,
                "prefect_overhead_share": max(0.0, 1.0 - plain_s / flow_s),
                "prefect_overhead_goal": 0.10,
                "note": "latency = acquisition of a frame to the commit of its batch's atoms and decision",
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
