"""The frame check's speed, this code against an older copy of it, in one process and alternation.

Run: ``PYTHONPATH=. python benchmarks/check_speed.py --old DIR [--frames 32] [--rounds 3]``, where
``DIR/tasks/inference`` holds the older inference package (e.g. ``git archive REV tasks | tar -x
-C DIR``). Writes ``benchmarks/results/check_speed.json``:

- the checked pipeline on 256² twin frames at 0.12 Å/px (the frames of ``inference.py``), batches
  of 16, torch's threads (2): per batch ``Ensemble.locate`` with the check of the two codes (the
  older ``ensemble.py`` with its ``verify.py`` and the rest of its package) in alternating order,
  both on the one execution path the automatic trial picks for a batch here, or ``--path``
  (paths differ by float round-off); median wall and CPU (process) ms per frame of each, the median of the
  per-batch ratios, checked frames/s of each, the network alone (raw) beside them, F1 of each;
- the check alone, CPU ms per frame in one thread with one BLAS thread, on the twin frames and the
  abTEM frames (../shared/data, evaluation only), the two ``verify`` alternating round by round;
- with ``--context``, the new code carries a ``verify.CheckContext`` from batch to batch (as the
  edge loop does; the older code has none), so its cost is in the new code's figures (written
  to ``results/check_speed_context.json``);
- whether the two codes' outputs agree: the largest difference of every field of every frame's
  ``Atoms`` (positions in px; counts and flags must be equal).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from _common import write_result

from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.inference import verify as new_verify
from tasks.inference.ensemble import BATCH, Ensemble
from tasks.inference.metrics import evaluate
from tasks.inference.refine import one_blas_thread
from tasks.inference.registry import load_ensemble

ABTEM = Path(__file__).resolve().parents[2] / "shared" / "data" / "abtem-graphene"


def _older(root: Path) -> tuple[ModuleType, ModuleType]:
    """The older ``verify`` and ``ensemble`` modules, imported from the package ``older_check``
    (their relative imports resolve to the older files)."""
    package = root / "tasks" / "inference"
    spec = importlib.util.spec_from_file_location(
        "older_check", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None and spec.loader is not None
    sys.modules["older_check"] = importlib.util.module_from_spec(spec)  # without running its __init__
    modules = []
    for name in ("verify", "ensemble"):
        module_spec = importlib.util.spec_from_file_location(f"older_check.{name}", package / f"{name}.py")
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[f"older_check.{name}"] = module
        module_spec.loader.exec_module(module)
        modules.append(module)
    return modules[0], modules[1]


def _largest_difference(a: list, b: list) -> dict[str, float]:
    out: dict[str, float] = {}
    for x, y in zip(a, b, strict=True):
        for name in x.__dataclass_fields__:
            u, v = getattr(x, name), getattr(y, name)
            if isinstance(u, np.ndarray) and u.dtype.kind == "f":
                same_shape = u.shape == v.shape and np.array_equal(np.isnan(u), np.isnan(v))
                d = (
                    float(np.nanmax(np.abs(u - v)))
                    if same_shape and u.size
                    else (0.0 if same_shape else np.inf)
                )
            else:
                d = 0.0 if np.array_equal(u, v) else np.inf
            out[name] = max(out.get(name, 0.0), d)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="a checkout holding the older check")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--path", default="auto", help="the execution path of both codes (auto: the trial's)")
    parser.add_argument("--context", action="store_true", help="the new code carries a CheckContext")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    old_verify, old_ensemble = _older(args.old)
    codes = {"old": old_verify, "new": new_verify}
    load = [os.getloadavg()[0]]
    cpu = torch.device("cpu")

    ensemble = load_ensemble("production", device=cpu)
    ensemble.check = False
    twin = DigitalTwin(7, DriftSchedule(base={"region": 11}), (256, 256))
    shots = [twin.acquire(i) for i in range(args.frames)]
    frames = np.stack([f.image for f in shots]).astype(np.float32)
    p = shots[0].pixel_size
    batches = [frames[i : i + BATCH] for i in range(0, len(frames), BATCH)]
    ensemble.locate(batches[0], p)  # the automatic trial for a batch's shape
    path = ensemble.runner.chosen(ensemble._prepare(batches[0], p)[0]) if args.path == "auto" else args.path
    pipelines = {
        "old": old_ensemble.Ensemble(ensemble.net, ensemble.config, ensemble.version, cpu, execution=path),
        "new": Ensemble(ensemble.net, ensemble.config, ensemble.version, cpu, execution=path),
    }
    for pipeline in pipelines.values():  # first use: compilation, caches, the parts' runners
        pipeline.locate(batches[0], p)

    context = new_verify.CheckContext() if args.context else None
    seconds: dict[str, list[float]] = {"raw": [], "old": [], "new": []}
    cpu_ms: dict[str, list[float]] = {"raw": [], "old": [], "new": []}
    checked: dict[str, list] = {"old": [], "new": []}
    for r in range(args.rounds):
        for b, batch in enumerate(batches):
            for name in ("raw", "old", "new") if (r + b) % 2 == 0 else ("raw", "new", "old"):
                start, start_cpu = time.perf_counter(), time.process_time()
                if name == "new" and context is not None:
                    result = pipelines[name].locate(batch, p, context)
                else:
                    result = (ensemble if name == "raw" else pipelines[name]).locate(batch, p)
                seconds[name].append((time.perf_counter() - start) / len(batch))
                cpu_ms[name].append(1e3 * (time.process_time() - start_cpu) / len(batch))
                if r == 0 and name != "raw":
                    checked[name].extend(result)
    raw, old, new = (np.array(seconds[k]) for k in ("raw", "old", "new"))

    # The check alone, one thread, CPU time: twin frames and the abTEM frames.
    sets = {"twin": (list(frames), p)}
    names = sorted(f.stem for f in ABTEM.glob("*.npy") if f.stem != "truth_rowcol_px")
    if names:
        sets["abtem"] = ([np.load(ABTEM / f"{n}.npy").astype(np.float32) for n in names], 0.1)
    alone: dict[str, dict[str, list[float]]] = {}
    agree: dict[str, dict[str, float]] = {}
    with one_blas_thread():
        for key, (images, size) in sets.items():
            proposals = ensemble.locate(images, size)
            outputs = {}
            for r in range(args.rounds):
                for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
                    start = time.thread_time()
                    outputs[name] = [codes[name].verify(i, a) for i, a in zip(images, proposals, strict=True)]
                    alone.setdefault(key, {}).setdefault(name, []).append(
                        1e3 * (time.thread_time() - start) / len(images)
                    )
            agree[key] = _largest_difference(outputs["old"], outputs["new"])
    agree["twin_pipeline"] = _largest_difference(checked["old"], checked["new"])
    load.append(os.getloadavg()[0])
    truth = [f.truth.rowcol for f in shots]
    write_result(
        "check_speed_context" if args.context else "check_speed",
        {
            "old": str(args.old),
            "load_average": load,
            "frames": args.frames,
            "rounds": args.rounds,
            "threads": args.threads,
            "context": args.context,
            "pipeline": {
                "execution_path": path,
                "raw_frames_per_s": float(1 / np.median(raw)),
                "checked_frames_per_s": {"old": float(1 / np.median(old)), "new": float(1 / np.median(new))},
                "checked_new_over_old": float(np.median(old / new)),
                "cpu_ms_per_frame": {k: float(np.median(v)) for k, v in cpu_ms.items()},
                "check_wall_ms_per_frame": {
                    "old": 1e3 * float(np.median(old - raw)),
                    "new": 1e3 * float(np.median(new - raw)),
                },
                "f1": {
                    k: evaluate([a.rowcol for a in v], truth, p).as_dict()["f1"] for k, v in checked.items()
                },
            },
            "check_alone_cpu_ms_per_frame": alone,
            "largest_difference_old_new": agree,
        },
    )


if __name__ == "__main__":
    main()
