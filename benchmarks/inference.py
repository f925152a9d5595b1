"""Edge inference speed and accuracy: the fused ensemble against a per-member loop of the same weights.

Run: ``PYTHONPATH=. python benchmarks/inference.py [--frames 64] [--repeats 3] [--model production]``.
Writes ``benchmarks/results/inference.json``: frames/s (256² px frames at 0.12 Å/px, K
members, 2 threads) of the full pipeline (resampling, network, peak decoding) fused and
looped, network-only times, peak memory over the pass, F1 of both and of the classical
baseline on the same frames, the per-scenario and abTEM evaluation, and, when a GPU is
present, the fused figures on it. AtomAI 0.8.1's EnsemblePredictor (594k-parameter U-Net,
5 members) was measured at 7.2 frames/s on this kind of machine (design.md); it is not
re-run here (its import needs torchvision, which has no CPU build on this registry).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from scopeflow.atoms import Atoms
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.inference.baseline import ClassicalFinder
from tasks.inference.ensemble import BATCH, BORDER, Ensemble
from tasks.inference.metrics import evaluate
from tasks.inference.registry import load_ensemble
from tasks.training.evaluation import report

ATOMAI_FPS = 7.2  # design.md: AtomAI 0.8.1 EnsemblePredictor, 5 × 594k-param U-Net, 2 threads
RESULTS = Path(__file__).parent / "results" / "inference.json"


class PeakRSS:
    """Peak resident memory (bytes) above the level at entry, sampled every 2 ms."""

    def __enter__(self) -> PeakRSS:
        self.proc = psutil.Process()
        self.start = self.proc.memory_info().rss
        self.peak = self.start
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20


def loop_locate(
    ensemble: Ensemble, frames: list[np.ndarray], pixel_size: float, members: list[Ensemble]
) -> list[Atoms]:
    """The same pipeline, but the members' networks run one after another (AtomAI's way)."""
    out: list[Atoms] = []
    with torch.inference_mode():
        for idx, stack, p in ensemble._batches(frames, pixel_size):
            x, scaling = ensemble._prepare(stack, p)
            h, w = scaling.model_shape
            raw = torch.cat([m.net.logits(x) for m in members], dim=1)
            raw = raw[..., BORDER : BORDER + h, BORDER : BORDER + w]
            c = ensemble.net.n_classes
            out.extend(ensemble._decode(raw[:, :, :c], raw[:, :, c:], scaling, logits=True))
            del idx
    return out


@torch.inference_mode()
def net_only(ensemble: Ensemble, members: list[Ensemble], x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Milliseconds per frame of the networks alone on a prepared batch (best of ``repeats``)."""
    fused, looped, fused_cpu, looped_cpu = [], [], [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        ensemble.net.logits(x)
        fused.append(time.perf_counter() - t)
        fused_cpu.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        for m in members:
            m.net.logits(x)
        looped.append(time.perf_counter() - t)
        looped_cpu.append(time.process_time() - c)
    n = x.shape[0]
    return {
        "fused_ms_per_frame": 1e3 * min(fused) / n,
        "loop_ms_per_frame": 1e3 * min(looped) / n,
        # CPU time (all threads) is what the work costs, whatever else runs on the machine.
        "fused_cpu_ms_per_frame": 1e3 * min(fused_cpu) / n,
        "loop_cpu_ms_per_frame": 1e3 * min(looped_cpu) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="production")
    parser.add_argument("--no-eval", action="store_true", help="skip the scenario/abTEM evaluation")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()

    ensemble = load_ensemble(args.model, device=torch.device("cpu"))
    members = [ensemble.member(k) for k in range(ensemble.members)]
    twin = DigitalTwin(7, DriftSchedule(base={"region": 11}), (256, 256))
    shots = [twin.acquire(i) for i in range(args.frames)]
    frames = [f.image for f in shots]
    p = shots[0].pixel_size
    truth = [f.truth.rowcol for f in shots]

    # Warm-up: oneDNN builds its kernels for each shape on first use.
    ensemble.locate(frames[:BATCH], p)
    loop_locate(ensemble, frames[:BATCH], p, members)
    timings: dict[str, list[float]] = {"fused": [], "loop": []}
    cpu_times: dict[str, list[float]] = {"fused": [], "loop": []}
    memory: dict[str, float] = {}
    found: dict[str, list[Atoms]] = {}
    for _ in range(args.repeats):  # interleaved, so load from other users hits both alike
        for mode in ("fused", "loop"):
            with PeakRSS() as mem:
                t, c = time.perf_counter(), time.process_time()
                if mode == "fused":
                    found[mode] = ensemble.locate(frames, p)
                else:
                    found[mode] = loop_locate(ensemble, frames, p, members)
                timings[mode].append(time.perf_counter() - t)
                cpu_times[mode].append(time.process_time() - c)
            memory[mode] = max(memory.get(mode, 0.0), mem.mib)
    t = time.perf_counter()
    base = [ClassicalFinder().locate(f, p, 1.42).rowcol for f in frames]
    t_base = time.perf_counter() - t

    x, _ = ensemble._prepare(np.stack(frames[:BATCH]), p)
    nets = net_only(ensemble, members, x, args.repeats)
    fps = {k: args.frames / min(v) for k, v in timings.items()}
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": args.threads,
            "load_average_at_start": load_at_start,
            "torch": torch.__version__,
        },
        "model": {
            "version": ensemble.version,
            "members": ensemble.members,
            "params_per_member": ensemble.net.parameters_per_member(),
            "model_pixel_size_A": ensemble.config.model_pixel_size,
        },
        "frames": {"count": args.frames, "shape": [256, 256], "pixel_size_A": p, "batch": BATCH},
        "cpu": {
            "fused_frames_per_s": fps["fused"],
            "loop_frames_per_s": fps["loop"],
            "fused_over_loop": fps["fused"] / fps["loop"],
            "fused_over_atomai": fps["fused"] / ATOMAI_FPS,
            "atomai_reference_frames_per_s": ATOMAI_FPS,
            # Frames per second if the work's CPU time were spread over the threads perfectly:
            # the figure an idle machine approaches (wall-clock figures suffer from other users).
            "fused_frames_per_cpu_s_per_thread": args.frames * args.threads / min(cpu_times["fused"]),
            "loop_frames_per_cpu_s_per_thread": args.frames * args.threads / min(cpu_times["loop"]),
            "fused_seconds_all_repeats": timings["fused"],
            "loop_seconds_all_repeats": timings["loop"],
            "network_only": nets,
            "peak_memory_mib": memory,
            "baseline_frames_per_s": args.frames / t_base,
        },
        "f1_on_timed_frames": {
            "fused": evaluate([a.rowcol for a in found["fused"]], truth, p).as_dict(),
            "loop": evaluate([a.rowcol for a in found["loop"]], truth, p).as_dict(),
            "baseline": evaluate(base, truth, p).as_dict(),
        },
    }
    if torch.cuda.is_available():
        gpu = load_ensemble(args.model, device=torch.device("cuda"))
        gpu.locate(frames[:BATCH], p)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        gpu.locate(frames, p)
        torch.cuda.synchronize()
        result["gpu"] = {
            "device": torch.cuda.get_device_name(),
            "fused_frames_per_s": args.frames / (time.perf_counter() - t),
            "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20,
        }
    if not args.no_eval:
        result["evaluation"] = report(ensemble)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    cpu = result["cpu"]
    print(
        f"fused {cpu['fused_frames_per_s']:.1f} frames/s, loop {cpu['loop_frames_per_s']:.1f} frames/s "
        f"({cpu['fused_over_loop']:.2f}×; {cpu['fused_over_atomai']:.1f}× AtomAI's 7.2); CPU-time bound: fused "
        f"{cpu['fused_frames_per_cpu_s_per_thread']:.1f}, loop {cpu['loop_frames_per_cpu_s_per_thread']:.1f} frames/s; "
        f"F1 fused {result['f1_on_timed_frames']['fused']['f1']:.4f} "
        f"baseline {result['f1_on_timed_frames']['baseline']['f1']:.4f} → {RESULTS}"
    )


if __name__ == "__main__":
    main()
