"""Drift detection on streams the twin did not make, and on the twin's: delay, false alarms,
attribution, against a plain baseline calibrated the same way (issue #13).

Every stream goes through the edge's adaptive ensemble (production model, network detectors
included) in batches of 16. The baseline watches two features of the raw frames (mean counts
and the mean periodogram power above half the Nyquist frequency) with the same calibration
(block bootstrap from the reference, same ERT, window, look-back and re-referencing).
Writes ``results/drift_detection.json``.
Run: ``.venv/bin/python benchmarks/drift_detection.py [--ert 1000] [--monitor-only]``.

``--monitor-only`` feeds the monitor the frames' spectra without the network (its features
replaced by seeded noise: they are calibrated and reported but never decide, so detections,
false alarms and attribution are the same as the full run's) and writes
``results/drift_detection_monitor.json``: ~10× faster, for before/after comparisons of the
monitor on a shared machine. The baseline is the same in both.
"""

from __future__ import annotations

import argparse
import time
from collections import deque
from typing import Any

import drift_streams as S
import numpy as np
import torch
from _common import write_result
from scipy.stats import chi2

from storage.models import ModelRegistry
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.drift.adaptive import AdaptiveEnsemble
from tasks.drift.calibration import calibrate
from tasks.drift.monitor import Decision, DriftMonitor, Observation
from tasks.drift.physics import Proxies
from tasks.drift.spectrum import image_stats
from tasks.inference.registry import load_ensemble

BATCH = 16
WINDOW = 10
REFERENCE = 64


# The issue's goals, as every drift-detection benchmark records them beside its figures.
GOALS = {
    "caught_within_16": "all",
    "false_alarms_per_1000": 1,
    "named_right_share": 0.9,
    "defocus_error_A": 20,
    "dose_error": 0.25,
}


def summarise(results: dict[str, dict]) -> dict:
    """Totals over the streams' results (ours and the baseline): changes caught, false alarms,
    watched frames and their ERT and per-1000 intervals, naming, the estimates' errors."""
    rows = [r for v in results.values() for r in v["ours"]["changes"]]
    named = [r["named_right"] for r in rows if "named_right" in r]
    summary = {
        "changes": len(rows),
        "caught_within_16": sum(v["ours"]["caught_within_16"] for v in results.values()),
        "baseline_caught_within_16": sum(v["baseline"]["caught_within_16"] for v in results.values()),
        "false_alarms": sum(v["ours"]["false_alarms"] for v in results.values()),
        "baseline_false_alarms": sum(v["baseline"]["false_alarms"] for v in results.values()),
        "watched_frames": sum(v["ours"]["watched_frames"] for v in results.values()),
        "baseline_watched_frames": sum(v["baseline"]["watched_frames"] for v in results.values()),
        "named_right": int(sum(named)),
        "named": len(named),
        "named_right_share": float(np.mean(named)) if named else None,
        "defocus_errors_A": [r["defocus_error_A"] for r in rows if "defocus_error_A" in r],
        "dose_errors": [r["dose_error"] for r in rows if "dose_error" in r],
    }
    summary.update(ert_interval(summary["false_alarms"], summary["watched_frames"]))
    watched = max(summary["watched_frames"], 1)
    summary["false_alarms_per_1000"] = 1000 * summary["false_alarms"] / watched
    summary["false_alarms_per_1000_95"] = [
        1000 * x / watched for x in poisson_interval(summary["false_alarms"])
    ]
    return summary


def _baseline_features(frame: np.ndarray) -> np.ndarray:
    img = np.asarray(frame, np.float64)
    p = np.abs(np.fft.rfft2(img - img.mean())) ** 2 / img.size
    ky = np.abs(np.fft.fftfreq(img.shape[0]))[:, None]
    kx = np.fft.rfftfreq(img.shape[1])[None, :]
    return np.array([img.mean(), p[np.hypot(ky, kx) > 0.25].mean()])


def baseline_detections(frames: np.ndarray, ert: float) -> tuple[list[int], int]:
    """First-alarm frames of the two-feature baseline (re-referencing after each alarm), and
    the frames it decided on."""
    names = ("mean", "high_frequency_power")
    out: list[int] = []
    watched = 0
    history: list[np.ndarray] = []
    cal = None
    recent: deque = deque()
    for start in range(0, len(frames), BATCH):
        feats = [_baseline_features(f) for f in frames[start : start + BATCH]]
        if cal is None:
            history += feats
            if len(history) >= REFERENCE:
                lookback = REFERENCE - WINDOW
                cal = calibrate(np.array(history), names, ert=ert, window=WINDOW, lookback=lookback)
                recent = deque(history[-(WINDOW + lookback) :], maxlen=WINDOW + lookback)
            continue
        for i, f in enumerate(feats):
            recent.append(f)
            watched += 1
            if (cal.statistics(np.stack(recent)) > cal.threshold).any():
                out.append(start + i)
                cal, history = None, []
                break
    return out, watched


def _tally(d: Decision, start: int, size: int, out: list[dict], **extra: Any) -> int:
    """Append a detection's record (first alarm, conditions named, estimates, ``extra``) to
    ``out``; return the frames of the batch starting at ``start`` the monitor watched (none
    before it decides; up to the first alarm in a batch with a detection)."""
    if d.detected:
        out.append(
            {
                "frame": d.first_alarm,
                "changed": list(d.changed),
                "summary": d.summary,
                "fired": d.fired(),
                **extra,
                **{k: v for k, v in d.attribution.items() if np.isfinite(v)},
            }
        )
    if not np.isfinite(d.scores["dose"]):
        return 0
    return size if not d.detected else max(0, d.first_alarm - start + 1)


def run_stream(adaptive: AdaptiveEnsemble, frames: np.ndarray, pixel_size: float) -> tuple[list[dict], int]:
    """Detections of the adaptive ensemble (first alarm, conditions named, estimates) and the
    frames watched: those of batches with a decision (a batch in which a short reference was
    completed counts whole, up to 15 frames too many per re-reference)."""
    adaptive.use(adaptive.ensemble)
    out = []
    watched = 0
    for start in range(0, len(frames), BATCH):
        batch = list(frames[start : start + BATCH])
        o = adaptive.process(batch, [pixel_size] * len(batch), start)
        watched += _tally(o.decision, start, len(batch), out, action=o.action)
    return out, watched


def run_monitor(monitor: DriftMonitor, frames: np.ndarray, pixel_size: float) -> tuple[list[dict], int]:
    """``run_stream`` for the monitor alone: the network's features are seeded noise (they never
    decide), the image-formation features are the frames' own."""
    rng = np.random.default_rng(0)
    out = []
    watched = 0
    monitor.rereference()
    for start in range(0, len(frames), BATCH):
        batch = [
            Observation(
                rng.normal(size=4),
                float(rng.normal(0.1, 0.01)),
                Proxies(0.3, 2.0, 0.1),
                image_stats(f, pixel_size),
            )
            for f in frames[start : start + BATCH]
        ]
        d = monitor.observe_observations(start, batch)
        watched += _tally(d, start, len(batch), out)
        if d.detected:
            monitor.rereference()
    return out, watched


# The issue's smallest changes: ±40 Å, ×0.3 or ×3, source/probe size +0.3 Å.
GOAL = {"defocus": 40.0, "dose": 3.0, "source": 0.3}


def _goal_frame(
    c: int,
    cond: str,
    end: int,
    dose: np.ndarray | None,
    defocus: np.ndarray | None,
    source: np.ndarray | None = None,
) -> int:
    """Frame at which a change starting at ``c`` reached the goal's size (a ramp takes a while)."""
    for t in range(c, end):
        if cond == "blur" and source is not None and abs(source[t] - source[c - 1]) >= GOAL["source"] - 1e-9:
            return t
        if cond == "defocus" and defocus is not None and abs(defocus[t] - defocus[c - 1]) >= GOAL["defocus"]:
            return t
        if (
            cond == "dose"
            and dose is not None
            and max(dose[t] / dose[c - 1], dose[c - 1] / dose[t]) >= GOAL["dose"]
        ):
            return t
    return c


def score(
    changes: list[tuple[int, str, str]],
    detections: list[int],
    n: int,
    watched: int,
    attributions: list[dict] | None = None,
    dose: np.ndarray | None = None,
    defocus: np.ndarray | None = None,
    source: np.ndarray | None = None,
) -> dict:
    """Delays (from the frame where a change reached the goal's size), misses, false alarms per
    1000 watched frames (with a 95 % Poisson interval), attribution and estimate errors. An
    alarm after the first inside a ramp (the change is still going on) is neither a detection
    nor a false alarm; changes starting at the same frame share their detection."""
    distinct = [*sorted({c[0] for c in changes}), n]
    starts = [next(s for s in distinct if s > c[0]) for c in changes]
    matched: set[int] = set()
    repeats: set[int] = set()
    per_change = []
    taken: dict[int, int] = {}  # change start -> its detection
    for (c, cond, kind), nxt in zip(changes, starts, strict=True):
        goal = _goal_frame(c, cond, nxt, dose, defocus, source) if kind == "ramp" else c
        hit = taken.get(c, next((d for d in detections if c <= d < nxt and d not in matched), None))
        if hit is not None:
            taken[c] = hit
        row: dict = {
            "frame": c,
            "condition": cond,
            "kind": kind,
            "goal_size_at": goal,
            "delay": None if hit is None else max(hit - goal, 0),
        }
        if kind == "ramp" and hit is not None:
            # The ramp's last changing frame (a series may hold still between its steps).
            ramp_end = max(
                (
                    t
                    for t in range(c + 1, nxt)
                    if (dose is not None and dose[t] != dose[t - 1])
                    or (defocus is not None and defocus[t] != defocus[t - 1])
                    or (source is not None and source[t] != source[t - 1])
                ),
                default=c,
            )
            repeats |= {d for d in detections if hit < d <= ramp_end + REFERENCE}
        if hit is not None:
            matched.add(hit)
            if attributions is not None:
                a = next(x for x in attributions if x["frame"] == hit)
                row["named"] = a["changed"]
                row["named_right"] = cond in a["changed"]
                row["summary"] = a["summary"]
                if kind == "step" and dose is not None and "dose_ratio" in a:
                    truth = dose[min(hit + 8, n - 1)] / dose[c - 1]
                    row["dose_ratio"] = a["dose_ratio"]
                    row["dose_ratio_truth"] = float(truth)
                    row["dose_error"] = float(a["dose_ratio"] / truth - 1)
                if kind == "step" and defocus is not None and "defocus_change_A" in a:
                    truth = float(abs(defocus[min(hit + 8, n - 1)]) - abs(defocus[c - 1]))
                    row["defocus_change_A"] = a["defocus_change_A"]
                    row["defocus_change_truth_A"] = truth
                    row["defocus_error_A"] = float(a["defocus_change_A"] - truth)
                    # The Cramér–Rao bound from the same frames (spectrum.defocus_bound).
                    row["defocus_bound_A"] = a.get("defocus_bound_A")
        per_change.append(row)
    false = [d for d in detections if d not in matched and d not in repeats]
    delays = [r["delay"] for r in per_change if r["delay"] is not None]
    return {
        "changes": per_change,
        "detections": list(detections),
        "caught_within_16": sum(1 for d in delays if d <= 16),
        "missed": sum(1 for r in per_change if r["delay"] is None),
        "false_alarms": len(false),
        "false_alarm_frames": false,
        "watched_frames": watched,
        "false_alarms_per_1000": 1000 * len(false) / max(watched, 1),
        "false_alarms_per_1000_95": [1000 * x / max(watched, 1) for x in poisson_interval(len(false))],
    }


def poisson_interval(k: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) interval for the mean of a Poisson count ``k``."""
    a = 1.0 - level
    lo = 0.0 if k == 0 else float(chi2.ppf(a / 2, 2 * k) / 2)
    return lo, float(chi2.ppf(1 - a / 2, 2 * k + 2) / 2)


def ert_interval(alarms: int, watched: int) -> dict:
    """Measured ERT (watched frames per false alarm) with its 95 % interval (frames)."""
    lo, hi = poisson_interval(alarms)
    return {
        "ert_frames": watched / alarms if alarms else None,
        "ert_95": [watched / hi, watched / lo if lo > 0 else None],
    }


def twin_stream(name: str, schedule: str, n: int, seed: int, base: dict | None = None) -> S.Stream:
    """A twin stream (128² px) with its truth."""
    twin = DigitalTwin(seed=seed, schedule=DriftSchedule.parse(schedule, base=base), shape=(128, 128))
    acquired = [twin.acquire(i) for i in range(n)]
    c = [f.conditions for f in acquired]
    changes = tuple(
        (
            ch.start,
            {"source_size": "blur", "region": "lattice"}.get(ch.key, ch.key),
            "ramp" if ch.ramp else "step",
        )
        for ch in twin.schedule.changes
        if ch.key != "contamination"
    )
    return S.Stream(
        name,
        np.stack([f.image for f in acquired]),
        float(acquired[0].pixel_size),
        np.array([x["defocus"] for x in c]),
        np.array([x["dose"] for x in c]),
        changes,
        {"voltage_kv": c[0]["voltage_kv"], "semiangle_mrad": c[0]["semiangle_mrad"]},
        np.array([x["source_size"] for x in c]),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ert", type=float, default=1000.0)
    ap.add_argument("--quick", action="store_true", help="abTEM streams only")
    ap.add_argument("--monitor-only", action="store_true", help="no network: the monitor's decisions only")
    ap.add_argument("--name", default=None, help="results file name (before/after runs)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    import tempfile

    ensemble = None
    if not args.monitor_only:
        ensemble = load_ensemble("production", ModelRegistry(tempfile.mkdtemp(prefix="drift-det-")))
    # The stationary streams are long (3000 + 1500 + 2000 frames) so that each kind's
    # false-alarm rate has an interval narrow enough to say whether it is above 1 per 1000.
    streams = [
        S.issue_stream(),
        S.goal_steps(crops="random"),
        S.goal_steps(),
        S.ramps(),
        S.stationary(3000),
        S.stationary(1500, seed=4, crops="random"),
        # Ramps slower than the window statistics' look-back (issue #13: dose ×0.3 and ×3 over
        # 150 frames, source size +0.3 Å over 150 frames).
        S.slow_dose_ramps(),
        S.slow_source_ramp(),
    ]
    if not args.quick:
        streams += [
            twin_stream("twin-standard", "standard", 2400, 21),
            twin_stream(
                "twin-steps",
                "defocus=40@150,defocus=0@300,source_size=0.6@450,source_size=0.3@600,"
                "dose=1.5e6@750,dose=5e6@900,region=1@1050",
                1200,
                22,
            ),
            # Slow sample drift (the twin's default 0.02 Å/frame), scan jitter and contamination
            # growing from none to 10 % of the area over the stream: no alarm expected.
            twin_stream("twin-stationary", "contamination=0.1@0~2000", 2000, 23),
            # The slow ramps on the twin (base 5e6 e/Å², source 0.3 Å): dose ×0.3 over 150
            # frames and back over 150, source size +0.3 Å over 150 frames.
            twin_stream(
                "twin-slow-ramps", "dose=1.5e6@200~150,dose=5e6@500~150,source_size=0.6@800~150", 1100, 24
            ),
        ]
    results = {}
    for st in streams:
        monitor = DriftMonitor(args.ert, WINDOW, REFERENCE, optics=st.optics)
        t0 = time.perf_counter()
        if ensemble is None:
            found, watched = run_monitor(monitor, st.frames, st.pixel_size)
        else:
            found, watched = run_stream(AdaptiveEnsemble(ensemble, monitor), st.frames, st.pixel_size)
        seconds = time.perf_counter() - t0
        ours = score(
            list(st.changes),
            [f["frame"] for f in found],
            len(st.frames),
            watched,
            found,
            st.dose,
            st.defocus,
            st.source,
        )
        ours.update(ert_interval(ours["false_alarms"], watched))
        base_found, base_watched = baseline_detections(st.frames, args.ert)
        base = score(list(st.changes), base_found, len(st.frames), base_watched)
        results[st.name] = {
            "frames": len(st.frames),
            "ours": ours,
            "baseline": base,
            "detections": found,
            "frames_per_s": len(st.frames) / seconds,
        }
        print(
            st.name,
            ours["caught_within_16"],
            ours["missed"],
            ours["false_alarms"],
            base["caught_within_16"],
            flush=True,
        )
    summary = summarise(results)
    write_result(
        args.name or ("drift_detection_monitor" if args.monitor_only else "drift_detection"),
        {
            "monitor_only": args.monitor_only,
            "ert_frames": args.ert,
            "window_frames": WINDOW,
            "reference_frames": REFERENCE,
            "batch_frames": BATCH,
            "summary": summary,
            "streams": results,
            "goals": GOALS,
        },
    )


if __name__ == "__main__":
    main()
