"""Re-analysis throughput over dask.distributed: in-process, 1 and 2 worker processes, in alternating rounds.

Run: ``PYTHONPATH=. python benchmarks/reprocess.py [--frames 64] [--rounds 3] [--model production]``
(2–3 minutes with the defaults on the 2-core machine at load 6–7, mostly the clusters' start-ups).
Writes ``benchmarks/results/reprocess.json``.

Each round runs every mode once, in an order that rotates from round to round, on a twin dataset
of 256² frames with truth:

- ``in_process``: this process alone does what a worker does per batch (``locate_block``: read the
  frames from the store by position, run the ensemble, score against truth) and what the driver does
  (append and commit), on one torch thread;
- ``dask_1``, ``dask_2``: ``tasks.inference.reprocess.reprocess`` on a LocalCluster of 1 or 2 worker
  processes of one torch thread each;
- ``control``: the CPU cores 1 and then 2 plain busy-looping processes of this session get (2 s
  each). On a shared machine that is the most a second worker can add (a kernel with
  ``sched_autogroup`` shares the CPU between sessions, not processes); ``worker_cores`` of a dask
  run is the same figure for its workers.

Every mode is timed warm: the ensemble built and its execution trial done (``startup_seconds`` for
dask: the cluster start, the model broadcast and that warm-up). Beside wall frames/s it reports CPU
milliseconds per frame of the workers (process CPU seconds, user + system) and of the driver: work
that scales keeps the workers' CPU per frame flat as workers are added, whatever else the machine
runs, while wall frames/s on a shared machine also measures the others' load (recorded per run as
the 1-minute load average). ``scaling_2_over_1`` is the ratio of the medians of wall frames/s (2.0 is
perfect on two free cores). Without a trained ``--model`` an untrained ensemble of the shipped
architecture stands in: the cost of a pass does not depend on the weights.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import write_result
from scopeflow.errors import NotFoundError
from storage.datasets import Dataset, DatasetWriter
from storage.models import ModelRegistry
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.inference.batching import contiguous_batches
from tasks.inference.ensemble import Ensemble, EnsembleConfig
from tasks.inference.network import FusedUNet
from tasks.inference.registry import load_ensemble, save_ensemble
from tasks.inference.reprocess import ModelPayload, locate_block, reprocess, warm_worker


def model_for(ref: str, scratch: Path) -> tuple[ModelRegistry, str, str]:
    """(registry, version, what it is): the named model, else a stand-in of the same architecture."""
    registry = ModelRegistry()
    try:
        return registry, load_ensemble(ref, registry, torch.device("cpu")).version, ref
    except NotFoundError:
        torch.manual_seed(0)
        config = EnsembleConfig()
        ens = Ensemble(FusedUNet(config.members, config.widths, 3), config, device=torch.device("cpu"))
        stand_in = ModelRegistry(scratch / "registry", fallback=None)
        return stand_in, save_ensemble(stand_in, ens), "untrained stand-in (default architecture)"


def in_process(path: Path, payload: ModelPayload, batch_frames: int, name: str) -> dict[str, Any]:
    """A worker's work and the driver's in this one process, on one torch thread (warm)."""
    version = payload.build().version
    data = Dataset(path)
    writer = data.predictions(name, attrs={"model_version": version})
    data.commit()
    batches = contiguous_batches(range(data.n_frames), batch_frames)
    for a, b in {b - a: (a, b) for a, b in batches}.values():
        warm_worker(str(path), a, b, version, 1)
    load = os.getloadavg()[0]
    cpu0, t0 = time.process_time(), time.perf_counter()
    atoms = 0
    for a, b in batches:
        block = locate_block(str(path), a, b, version, 1)
        atoms += writer.append(list(range(a, b)), block.atoms)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    frames = data.n_frames
    return {
        "frames_per_second": round(frames / seconds, 2),
        "seconds": round(seconds, 2),
        "cpu_ms_per_frame": round(1000 * cpu / frames, 1),
        "atoms": atoms,
        "load_1min": round(load, 1),
    }


def on_dask(path: Path, registry: ModelRegistry, version: str, workers: int, batch_frames: int, name: str):
    """``reprocess`` on a LocalCluster of ``workers`` single-threaded worker processes."""
    load = os.getloadavg()[0]
    result = reprocess(
        path,
        version,
        registry=registry.root,
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        batch_frames=batch_frames,
        prediction_set=name,
    )
    cpu = sorted(result.worker_cpu_seconds.values())
    return {
        "frames_per_second": round(result.frames_per_second, 2),
        "seconds": round(result.seconds, 2),
        "startup_seconds": round(result.startup_seconds, 2),
        "worker_cpu_ms_per_frame": round(1000 * sum(cpu) / result.frames_processed, 1),
        "worker_cpu_seconds": [round(c, 2) for c in cpu],
        "driver_cpu_ms_per_frame": round(1000 * result.driver_cpu_seconds / result.frames_processed, 1),
        "worker_cores": round(sum(cpu) / result.seconds, 2),
        "atoms": result.atoms,
        "f1": round(result.f1, 4) if result.f1 is not None else None,
        "load_1min": round(load, 1),
    }


def _spin(seconds: float) -> float:
    """Busy-loop for ``seconds`` of wall time; the CPU seconds this process got meanwhile."""
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        pass
    return time.process_time() - c0


def cores_granted(processes: int, seconds: float = 2.0) -> float:
    """The control: CPU cores that ``processes`` plain busy processes of this session get at once
    now (2 on two idle cores). Their 2-over-1 ratio is the most a second worker could add."""
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(_spin, 0.0).result()  # the pool's processes started before the clock
        return round(sum(pool.map(_spin, [seconds] * processes)) / seconds, 2)


def control() -> dict[str, Any]:
    """``cores_granted`` for 1 and 2 processes, one after the other."""
    load = os.getloadavg()[0]
    return {"cores_1": cores_granted(1), "cores_2": cores_granted(2), "load_1min": round(load, 1)}


def median(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--batch-frames", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="production")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scopeflow-bench-") as tmp:
        scratch = Path(tmp)
        registry, version, what = model_for(args.model, scratch)
        twin = DigitalTwin(0, DriftSchedule.parse("defocus=40@32"), (256, 256))
        path = scratch / "archive.zarr"
        writer = DatasetWriter.open(path, twin.state())
        for start in range(0, args.frames, 16):
            writer.append([twin.acquire(i) for i in range(start, min(args.frames, start + 16))])
        ens = load_ensemble(version, registry, torch.device("cpu"))
        payload = ModelPayload.of(ens)

        modes = ["in_process", "dask_1", "dask_2", "control"]
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        for r in range(args.rounds):
            for mode in modes[r % 4 :] + modes[: r % 4]:
                name = f"bench-{mode}-{r}"
                if mode == "control":
                    run = control()
                elif mode == "in_process":
                    run = in_process(path, payload, args.batch_frames, name)
                else:
                    run = on_dask(path, registry, version, int(mode[-1]), args.batch_frames, name)
                run["round"] = r
                runs[mode].append(run)
                print(mode, run, flush=True)
        summary: dict[str, Any] = {
            m: {
                "frames_per_second_median": median(runs[m], "frames_per_second"),
                "cpu_ms_per_frame_median": median(
                    runs[m], "cpu_ms_per_frame" if m == "in_process" else "worker_cpu_ms_per_frame"
                ),
            }
            for m in modes[:3]
        }
        for m in ("dask_1", "dask_2"):
            summary[m]["driver_cpu_ms_per_frame_median"] = median(runs[m], "driver_cpu_ms_per_frame")
            summary[m]["worker_cores_median"] = median(runs[m], "worker_cores")
        summary["control"] = {k: median(runs["control"], k) for k in ("cores_1", "cores_2")}
        write_result(
            "reprocess",
            {
                "frames": args.frames,
                "frame_shape": [256, 256],
                "batch_frames": args.batch_frames,
                "rounds": args.rounds,
                "model": what,
                "version": version,
                "members": ens.members,
                "summary": summary,
                "scaling_2_over_1": round(
                    summary["dask_2"]["frames_per_second_median"]
                    / summary["dask_1"]["frames_per_second_median"],
                    3,
                ),
                "dask_2_over_in_process": round(
                    summary["dask_2"]["frames_per_second_median"]
                    / summary["in_process"]["frames_per_second_median"],
                    3,
                ),
                "control_2_over_1": round(summary["control"]["cores_2"] / summary["control"]["cores_1"], 3),
                "runs": runs,
                "note": "2 CPU cores shared with other work: see load_1min per run; CPU per frame is load-independent",
            },
        )


if __name__ == "__main__":
    main()
