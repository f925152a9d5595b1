"""How the checked answer for a frame depends on how many frames are checked together.

The check confirms a crystal from a frame's own spectrum, or, failing that, from the spectra of
its batch averaged (``tasks.inference.verify.pooled``); a small frame at very low dose seldom
shows its lattice alone. This runs the shipped production ensemble, checked, on 24 frames of
``benchmarks/drift.py``'s twin stream (seed 21, 128², the standard schedule) at dose 4·10⁴
e/Å² (frames 520–543) and in distribution (frames 40–63), in calls of 1, 3, 4, 8 and 24
frames, and scores them as drift.py does (``tasks.inference.metrics.evaluate``). Each size is
run three ways: every call alone (``no context``); with a ``verify.CheckContext`` carried
from call to call, as the edge carries it, empty at the stretch's first frame (``context``:
as if the drift monitor had reported a change just before it); and the same, the context
first given the 16 frames before the stretch in one call (``context, warm``: a stationary
run). Then frames without a crystal (shot noise, vacuum, amorphous contrast; 128² at the
stream's pixel size), each checked alone after the 16 low-dose crystal frames before frame 520
(a fresh copy of that context per frame: the worst case, the crystal not diluted by them), and
as a run of their own with one context: frames reported with columns. Last, the edge loop
itself (``tasks.drift.edge_loop.EdgeLoop``, which carries the context) over a stationary run at
4·10⁴ e/Å² (48 frames 128², the twin of seed 21 at the stream's pixel size) in batches of 1, 4
and 16: F1 and empty frames over frames 16-47 (the first 16 fill the context). Writes ``results/check_batch.json``. Run: ``PYTHONPATH=. python benchmarks/check_batch.py``.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

import numpy as np
from _common import write_result
from accuracy import no_crystal_makers

from scopeflow.config import default_registry_dir
from scopeflow.settings import EdgeSettings
from storage.models import ModelRegistry
from tasks.acquisition.loop import acquire_run
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.drift.edge_loop import EdgeLoop
from tasks.inference.metrics import evaluate
from tasks.inference.registry import load_ensemble
from tasks.inference.verify import CONTEXT_FRAMES, CheckContext

SIZES = (1, 3, 4, 8, 24)
MODES = ("no context", "context", "context, warm")
STRETCHES = {"dose 4e4 (frames 520-543)": 520, "in distribution (frames 40-63)": 40}


def main() -> None:
    ensemble = load_ensemble("production", ModelRegistry(default_registry_dir()))
    twin = DigitalTwin(seed=21, schedule=DriftSchedule.parse("standard"), shape=(128, 128))
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for name, start in STRETCHES.items():
        frames = [twin.acquire(i) for i in range(start, start + 24)]
        before = [twin.acquire(i).image for i in range(start - CONTEXT_FRAMES, start)]
        pixel = float(frames[0].pixel_size)
        truth = [f.truth.rowcol for f in frames]
        out[name] = {}
        for mode in MODES:
            out[name][mode] = {}
            for size in SIZES:
                context = None if mode == "no context" else CheckContext()
                if mode == "context, warm":
                    ensemble.locate(before, pixel, context)
                found = []
                for s in range(0, len(frames), size):
                    part = [f.image for f in frames[s : s + size]]
                    found += [a.rowcol for a in ensemble.locate(part, pixel, context)]
                scores = evaluate(found, truth, pixel)
                out[name][mode][str(size)] = {
                    "f1": round(float(scores.f1), 4),
                    "frames_empty": int(sum(len(x) == 0 for x in found)),
                    "columns_per_frame": round(float(np.mean([len(x) for x in found])), 1),
                    "truth_per_frame": round(float(np.mean([len(t) for t in truth])), 1),
                }
                print(name, mode, size, out[name][mode][str(size)], flush=True)
    crystal = CheckContext()
    start = STRETCHES["dose 4e4 (frames 520-543)"]
    ensemble.locate([twin.acquire(i).image for i in range(start - CONTEXT_FRAMES, start)], pixel, crystal)
    write_result(
        "check_batch",
        {
            "model": ensemble.version,
            "frames": 24,
            "by_batch_size": out,
            "no_crystal_one_a_call": no_crystal(ensemble, crystal, pixel),
            "edge_stationary_4e4": edge_stationary(pixel),
        },
    )


def edge_stationary(pixel: float, frames: int = 48, skip: int = CONTEXT_FRAMES) -> dict:
    """F1 and empty frames after the first ``skip`` of a stationary low-dose run through the edge
    loop, by batch size (fresh dataset and registry each; ``pixel`` Å/px)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        twin = DigitalTwin(
            seed=21, schedule=DriftSchedule(base={"dose": 4e4, "pixel_size": pixel}), shape=(128, 128)
        )
        source = Path(tmp) / "run.zarr"
        acquire_run(twin, str(source), frames, batch_size=16)
        truth = [twin.acquire(i).truth.rowcol for i in range(skip, frames)]
        for size in (1, 4, 16):
            path = Path(tmp) / f"run-{size}.zarr"
            shutil.copytree(source, path)
            loop = EdgeLoop.open(
                path,
                registry=ModelRegistry(Path(tmp) / f"registry-{size}"),
                settings=EdgeSettings(batch_size=size),
            )
            reports = [r for r in iter(loop.advance, []) for r in r]
            found = [a.rowcol for r in reports for a in r.atoms][skip:]
            out[str(size)] = {
                "f1": round(float(evaluate(found, truth, pixel).f1), 4),
                "frames_empty": int(sum(len(x) == 0 for x in found)),
                "detections": int(sum(r.outcome.decision.detected for r in reports)),
            }
            print("edge, stationary 4e4, batch", size, out[str(size)], flush=True)
    return out


def no_crystal(ensemble, crystal: CheckContext, pixel: float, n: int = 30) -> dict:  # type: ignore[no-untyped-def]
    """Frames with columns among ``n`` of each kind without a crystal, checked one a call after
    the crystal frames of ``crystal`` and in a run of their own (128², ``pixel`` Å/px)."""
    out = {}
    for name, make in no_crystal_makers(np.random.default_rng(2027), (128, 128)).items():
        frames = [np.asarray(make(), np.float32) for _ in range(n)]
        ensemble.check = False  # what the check is given: the network's columns
        raw = [len(a) for a in ensemble.locate(frames, pixel)]
        ensemble.check = True
        after = [len(ensemble.locate(f, pixel, copy.deepcopy(crystal))[0]) for f in frames]
        run = CheckContext()
        alone = [len(ensemble.locate(f, pixel, run)[0]) for f in frames]
        out[name] = {
            "raw": {"frames_with_columns": sum(c > 0 for c in raw), "columns_max": max(raw)},
            "after_crystal": {"frames_with_columns": sum(c > 0 for c in after), "columns_max": max(after)},
            "own_run": {"frames_with_columns": sum(c > 0 for c in alone), "columns_max": max(alone)},
        }
        print(name, out[name], flush=True)
    return out


if __name__ == "__main__":
    main()
