"""What a ``verify.CheckContext`` costs, this code against an older copy: memory held, time taken.

Run: ``PYTHONPATH=. python benchmarks/check_context.py --old DIR [--rounds 3] [--sizes 256 1024 4096]``,
``DIR/tasks/inference`` the older inference package (``git archive REV tasks | tar -x -C DIR``,
as ``check_speed.py``). Writes ``benchmarks/results/check_context.json``:

- bytes a context holds (``tracemalloc``: allocations still live once the inputs are freed)
  after 16 frames of shot noise (5 counts/px, float32) of each size, checked one a call, each
  with columns proposed and found without a crystal (the worst case: every call pools, so the
  older code takes the spectra of the frames it holds too);
- CPU ms per frame of ``verify.pooled`` with a context carried from call to call (one thread,
  batches of 16, the two codes alternating, the minimum over rounds) on twin frames whose
  columns the shipped ensemble proposed: 128² at 4·10⁴ e/Å² (most frames lost alone) and 256²
  at 4·10⁴ (none lost), and ``verify`` beside it; the two codes' answers compared.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from pathlib import Path

import numpy as np
from _common import write_result
from check_speed import _older

from scopeflow.atoms import Atoms
from scopeflow.config import default_registry_dir
from storage.models import ModelRegistry
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.inference import verify as new
from tasks.inference.refine import one_blas_thread
from tasks.inference.registry import load_ensemble


def held_bytes(module, size: int, frames: int = 16) -> int:  # type: ignore[no-untyped-def]
    """Bytes a context of ``module`` holds after ``frames`` noise frames of ``size``² px."""
    rng = np.random.default_rng(size)
    n = 40
    proposals = [
        Atoms(
            rowcol=rng.uniform(0, size, (n, 2)).astype(np.float32),
            uncertainty=np.zeros(n, np.float32),
            score=np.ones(n, np.float32),
            cls=np.zeros(n, np.int64),
        )
    ]
    lost = [Atoms.empty(crystal=False)]
    for count in (2, frames):  # the first: fills the module's caches of this shape (not the context's)
        gc.collect()
        tracemalloc.start()
        try:
            context = _fill(module, rng, size, count, proposals, lost)
            gc.collect()
            held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        del context
    return int(held)


def _fill(module, rng, size: int, frames: int, proposals, lost):  # type: ignore[no-untyped-def]
    """A context of ``module`` given ``frames`` noise frames one a call, each pooled."""
    context = module.CheckContext()
    for _ in range(frames):
        frame = rng.poisson(5.0, (size, size)).astype(np.float32)
        module.pooled([frame], proposals, list(lost), context, 0.1)
        del frame
    assert len(context) == frames
    return context


def pooled_ms(old, ensemble, size: int, dose: float, rounds: int) -> dict:  # type: ignore[no-untyped-def]
    """CPU ms per frame of each code's ``pooled`` (context carried), ``verify`` beside it."""
    twin = DigitalTwin(21, DriftSchedule(base={"dose": dose, "pixel_size": 0.12}), (size, size))
    images = [twin.acquire(i).image for i in range(48)]
    ensemble.check = False
    raw = ensemble.locate(images, 0.12)
    ensemble.check = True
    with one_blas_thread():
        t = time.process_time()
        done = [new.verify_with_spectrum(img, a) for img, a in zip(images, raw, strict=True)]
        verify_ms = (time.process_time() - t) / len(images) * 1e3
    checked, spectra = [a for a, _ in done], [s for _, s in done]
    best = {"old": np.inf, "new": np.inf}
    answers: dict[str, list[Atoms]] = {}
    for r in range(rounds):
        for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
            module = old if name == "old" else new
            context = module.CheckContext()
            out: list[Atoms] = []
            t = time.process_time()
            for s in range(0, len(images), 16):
                part = slice(s, s + 16)
                extra = (spectra[part],) if name == "new" else ()
                out += module.pooled(images[part], raw[part], checked[part], context, 0.12, *extra)
            best[name] = min(best[name], (time.process_time() - t) / len(images) * 1e3)
            answers[name] = out
    same = all(
        np.array_equal(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)), equal_nan=True)
        for a, b in zip(answers["old"], answers["new"], strict=True)
        for f in a.__dataclass_fields__
    )
    lost = sum(len(a) == 0 and not a.crystal and len(p) > 0 for a, p in zip(checked, raw, strict=True))
    return {
        "frames": len(images),
        "lost_alone": int(lost),
        "pooled_ms_old": round(best["old"], 3),
        "pooled_ms_new": round(best["new"], 3),
        "verify_ms": round(verify_ms, 2),
        "answers_equal": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="DIR holding the older tasks/inference")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    args = parser.parse_args()
    old, _ = _older(args.old)
    memory = {}
    for size in args.sizes:
        memory[str(size)] = {name: held_bytes(m, size) for name, m in (("old", old), ("new", new))}
        print("held bytes", size, memory[str(size)], flush=True)
    ensemble = load_ensemble("production", ModelRegistry(default_registry_dir()))
    cost = {}
    for size, dose in ((128, 4e4), (256, 4e4)):
        cost[f"{size} at {dose:g}"] = pooled_ms(old, ensemble, size, dose, args.rounds)
        print("pooled", size, dose, cost[f"{size} at {dose:g}"], flush=True)
    write_result(
        "check_context",
        {"model": ensemble.version, "old": str(args.old), "held_bytes_16_frames": memory, "cost": cost},
    )


if __name__ == "__main__":
    main()
