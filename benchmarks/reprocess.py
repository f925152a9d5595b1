"""Re-analysis throughput over dask.distributed: 1 and 2 worker processes, and the scaling ratio.

Run: ``PYTHONPATH=. python benchmarks/reprocess.py [--frames 64] [--model production]``.
Writes ``benchmarks/results/reprocess.json``: frames/s of ``tasks.inference.reprocess.reprocess`` on a
twin dataset of 256² frames (LocalCluster, worker processes of one torch thread each; the
cluster start and model broadcast are reported apart and not counted), the same frames
in-process on one thread for reference, and the 2-worker/1-worker ratio (2.0 is perfect on
two free cores). Without a trained ``--model`` an untrained ensemble of the shipped
architecture stands in: the cost of a pass does not depend on the weights.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import write_result
from scopeflow.errors import NotFoundError
from storage.datasets import DatasetWriter, open_dataset
from storage.models import ModelRegistry
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.inference.ensemble import Ensemble, EnsembleConfig
from tasks.inference.network import FusedUNet
from tasks.inference.registry import load_ensemble, save_ensemble
from tasks.inference.reprocess import reprocess


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--batch-frames", type=int, default=8)
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

        torch.set_num_threads(1)
        ens = load_ensemble(version, registry, torch.device("cpu"))
        ds = open_dataset(path)
        t0 = time.perf_counter()
        ens.locate(list(ds["frames"].values), list(ds["pixel_size"].values))
        in_process = args.frames / (time.perf_counter() - t0)

        runs = {}
        for workers in (1, 2):
            result = reprocess(
                path,
                version,
                registry=registry.root,
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                batch_frames=args.batch_frames,
                prediction_set=f"bench-{workers}",
            )
            runs[workers] = {
                "frames_per_second": round(result.frames_per_second, 2),
                "seconds": round(result.seconds, 2),
                "startup_seconds": round(result.startup_seconds, 2),
                "atoms": result.atoms,
            }
        ratio = runs[2]["frames_per_second"] / runs[1]["frames_per_second"]
        write_result(
            "reprocess",
            {
                "frames": args.frames,
                "frame_shape": [256, 256],
                "batch_frames": args.batch_frames,
                "model": what,
                "members": ens.members,
                "in_process_1_thread_frames_per_second": round(in_process, 2),
                "dask_workers": {str(k): v for k, v in runs.items()},
                "scaling_ratio_2_over_1": round(ratio, 3),
                "note": "2 shared CPU cores; other work on the machine lowers the ratio",
            },
        )


if __name__ == "__main__":
    main()
