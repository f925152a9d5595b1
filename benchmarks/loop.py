"""End-to-end loop latency per frame (acquired → atoms + drift decision committed), the rate it
sustains, and Prefect's share.

Three plain-Python runs over the same twin stream, then the Prefect flow:

- ``sequential``: acquire a batch, append it, run the edge over it, one after the other (the
  loop before it was pipelined; the twin waits for the edge, which no microscope does);
- ``pipelined``: ``tasks.drift.pipeline.run_pipelined`` as ``flows/loop.py`` runs it, the twin
  flat out: the rate the loop sustains end to end (frames over the wall time);
- ``paced``: the same with the twin's scans ending on a schedule of ``--rate`` frames/s (the
  issue's 20 frames/s), as a microscope's do, latency counted from each scan's end: the
  latency a user sees at that rate, and whether the loop keeps up.

Latency is measured from the moment each frame is acquired to the end of the commit that holds
its batch's atoms and decision (``latency_ms_*``, the goal's measure); ``returned_ms_*`` to the
return of the edge's call, which then scores the batch against the twin's truth (twin runs only).
The edge's storage costs per batch
(writing the drift monitor's state, and the batch's one commit) are timed inside each run
(``edge_storage_ms``). Prefect's share is
1 − (pipelined plain time / flow time): the flow runs the same pipeline over the same batches;
on a shared machine the load moves between the two runs, so the same run also gives each task
run's wall time against the loop's own time inside it (``task_run_overhead_*``).
Run: ``.venv/bin/python benchmarks/loop.py [--frames 160] [--batch 4] [--rate 20]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import write_result

import storage.datasets.handle
from scopeflow.frame import Frame
from scopeflow.settings import EdgeSettings
from storage.datasets import Dataset, DatasetWriter
from storage.models import ModelRegistry
from tasks.acquisition import make_instrument
from tasks.acquisition.loop import acquire_batch, batches
from tasks.drift.edge_loop import EdgeLoop, run_adaptive_edge
from tasks.drift.pipeline import overlap_pays, run_pipelined
from tasks.inference.registry import load_ensemble


class Stamped:
    """The twin, stamping when each frame is acquired; at ``rate`` frames/s when given."""

    def __init__(self, rate: float | None = None) -> None:
        self.twin = make_instrument("twin", seed=0, drift=None)  # stationary: no retraining
        self.name = self.twin.name
        self.rate = rate
        self.stamps: dict[int, float] = {}
        self.t0: float | None = None

    def acquire(self, index: int) -> Frame:
        if self.t0 is None:
            self.t0 = time.perf_counter()
        frame = self.twin.acquire(index)
        self.stamps[index] = time.perf_counter()
        if self.rate:
            # The scan of frame ``index`` ends at its time in the schedule: a loop that asks
            # earlier waits for it, one that asks later finds it waiting since then.
            scanned = self.t0 + (index + 1) / self.rate
            time.sleep(max(0.0, scanned - time.perf_counter()))
            self.stamps[index] = scanned
        return frame

    def conditions(self, index: int) -> dict[str, Any]:
        return self.twin.conditions(index)

    def state(self) -> dict[str, Any]:
        return self.twin.state()


def run(
    mode: str, path: Path, frames: int, batch: int, registry: ModelRegistry, rate: float | None = None
) -> dict[str, float]:
    """Latency percentiles (ms) and frames/s of one plain run in ``mode``."""
    instrument = Stamped(rate if mode == "paced" else None)
    writer = DatasetWriter.open(path, instrument.state())
    settings = EdgeSettings(batch_size=batch)
    loop = EdgeLoop(path, load_ensemble("production", registry), registry=registry, settings=settings)
    loop.warm(instrument.twin.shape, float(instrument.conditions(0)["pixel_size"]))
    done: dict[int, float] = {}
    returned: dict[int, float] = {}
    committed: list[float] = []  # when each of the edge's commits ended

    def edge(end: int) -> None:
        run_adaptive_edge(path, loop=loop, stop_at=end)
        now = time.perf_counter()
        # The edge's last commit before ``end`` holds the atoms and decision of every frame before it.
        done.update((i, committed[-1]) for i in instrument.stamps if i < end and i not in done)
        returned.update((i, now) for i in instrument.stamps if i < end and i not in returned)

    monitor = _timed(Dataset, "write_monitor_state")
    commits = _timed(storage.datasets.handle, "commit", committed)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    appends: list[float] = []
    if mode == "sequential":
        for first, end in batches(0, frames, batch):
            shots = [instrument.acquire(i) for i in range(first, end)]
            t0 = time.perf_counter()
            writer.append(shots)
            appends.append(time.perf_counter() - t0)
            edge(end)
    else:
        # As ``flows/loop.py`` runs it: overlapped only where a core is spare (``overlap_pays``).
        run_pipelined(
            lambda first, end: acquire_batch(instrument, writer, first, end),
            batches(0, frames, batch),
            edge,
            overlap=overlap_pays(),
        )
    wall, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
    _untimed(Dataset, "write_monitor_state")
    _untimed(storage.datasets.handle, "commit")
    lat = 1000 * np.array([done[i] - instrument.stamps[i] for i in range(frames)])
    ret = 1000 * np.array([returned[i] - instrument.stamps[i] for i in range(frames)])
    return {
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p95": float(np.percentile(lat, 95)),
        "latency_ms_max": float(lat.max()),
        "returned_ms_p50": float(np.percentile(ret, 50)),
        "returned_ms_p95": float(np.percentile(ret, 95)),
        "frames_per_second": frames / wall,
        "overlapped": mode != "sequential" and overlap_pays(),
        # Where a frame's latency goes: its batch filling after it (the first frame's wait for
        # the rest of its batch, medians), appending the batch (sequential), and the edge from
        # the batch's append to its commit.
        "fill_ms_first_frame": 1000
        * float(
            np.median(
                [
                    instrument.stamps[min(f + batch, frames) - 1] - instrument.stamps[f]
                    for f in range(0, frames, batch)
                ]
            )
        ),
        "append_ms": 1000 * float(np.median(appends)) if appends else float("nan"),
        "seconds": wall,
        # CPU seconds of this process (all its threads) per frame: the work on the loop's
        # path, which the load of other processes on a shared machine moves less than the wall.
        "cpu_ms_per_frame": 1000 * cpu / frames,
        "edge_storage_ms": {  # medians per batch: the monitor's state, the batch's commit
            "monitor_state": 1000 * float(np.median(monitor)),
            "commit": 1000 * float(np.median(commits)),
        },
    }


def inference_floor(registry: ModelRegistry, batch: int, rounds: int = 10) -> float:
    """Median seconds of the network alone (the chosen execution path) on a batch of twin frames."""
    twin = make_instrument("twin", seed=1, drift=None)
    ensemble = load_ensemble("production", registry)
    shots = [twin.acquire(i) for i in range(batch)]
    images, p = [f.image for f in shots], float(shots[0].pixel_size)
    ensemble.maps(np.stack(images), p)  # the trial, if not made yet
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        ensemble.maps(np.stack(images), p)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _timed(owner: Any, name: str, ends: list[float] | None = None) -> list[float]:
    """Wrap ``owner.name`` so that each call's wall time (s) is appended to the returned list
    (and the moment it returned to ``ends``)."""
    seconds: list[float] = []
    inner = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            t1 = time.perf_counter()
            seconds.append(t1 - t0)
            if ends is not None:
                ends.append(t1)

    wrapper.__wrapped__ = inner  # type: ignore[attr-defined]
    setattr(owner, name, wrapper)
    return seconds


def _untimed(owner: Any, name: str) -> None:
    """Undo ``_timed``."""
    setattr(owner, name, getattr(owner, name).__wrapped__)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=160)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rate", type=float, default=20.0, help="frames/s of the paced run (the goal's)")
    ap.add_argument("--modes", default="sequential,pipelined,paced,flow")
    args = ap.parse_args()
    modes = args.modes.split(",")
    torch.set_num_threads(2)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    work = Path(tempfile.mkdtemp(prefix="loop-bench-"))
    os.environ.setdefault("SCOPEFLOW_HOME", str(work / "home"))  # Prefect's and the store's files
    out: dict[str, Any] = {"frames": args.frames, "frame_shape": [256, 256], "batch_frames": args.batch}
    try:
        registry = ModelRegistry(work / "registry")
        out["inference_floor_ms_per_batch"] = 1000 * inference_floor(registry, args.batch)
        for mode in [m for m in modes if m != "flow"]:
            out[mode] = run(mode, work / f"{mode}.zarr", args.frames, args.batch, registry, args.rate)
            print(mode, out[mode], flush=True)
        if "flow" in modes and "pipelined" in out:
            import flows.edge
            from flows.loop import loop_flow

            loop_flow(
                frames=8, dataset=str(work / "warm.zarr"), drift=None, batch_size=8, publish=False
            )  # server start
            # In the same run: each task run's wall time against the loop's own time inside it.
            inside, calls = _timed(EdgeLoop, "advance"), _timed(flows.edge, "edge_batch_task")
            # The execution trial (``warm``, seconds, a fresh registry's) is outside the plain
            # runs' clock: it leaves the flow's too, or it would count as Prefect's.
            warm = _timed(EdgeLoop, "warm")
            t0 = time.perf_counter()
            loop_flow(
                frames=args.frames,
                dataset=str(work / "flow.zarr"),
                drift=None,
                batch_size=args.batch,
                registry=str(work / "registry"),  # installed by the plain runs, as on a used edge box
                publish=False,
            )
            flow_s = time.perf_counter() - t0 - sum(warm)
            plain_s = out["pipelined"]["seconds"]
            out |= {
                "plain_seconds": plain_s,
                "prefect_flow_seconds": flow_s,
                "flow_warm_seconds": sum(warm),
                "prefect_overhead_share": max(0.0, 1.0 - plain_s / flow_s),
                "task_runs": len(calls),
                "task_run_overhead_ms_median": 1000 * float(np.median(np.subtract(calls, inside))),
                "task_run_overhead_share": 1.0 - sum(inside) / sum(calls),
            }
        out |= {
            "paced_rate": args.rate,
            "latency_goal_ms_p95": 150,
            "rate_goal_frames_per_second": 20,
            "prefect_overhead_goal": 0.10,
            "note": "latency = acquisition of a frame to the commit of its batch's atoms and decision",
        }
        write_result("loop", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
