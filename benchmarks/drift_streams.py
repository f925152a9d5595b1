"""Evaluation streams for drift detection built from the abTEM frames (never used to tune or train).

The abTEM graphene images (../shared/data/abtem-graphene: 0.1 Å/px, periodic, noise-free at
defocus 0, 40 and 80 Å) are cropped to ``side`` px, either at random positions (a new area per
frame) or along a slow random walk (the sample drifting under the probe, with scan-line
jitter), and counted with Poisson noise at the stream's dose: counts = fraction × dose × p².
A defocus between the simulated ones is the linear blend of the two nearest noise-free images
(an approximation, used only inside ramps). ``build`` also takes other noise-free frames (the
unseen materials of ``drift_unseen.py``) with a per-frame source size, applied as a Gaussian
blur of that σ (Å) to the noise-free image before counting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "abtem-graphene"
DATA_FALLBACK = Path("/work/shared/data/abtem-graphene")


@dataclass(frozen=True)
class Stream:
    """Frames (n, side, side) counts, pixel size Å/px, per-frame truth (defocus Å, dose e/Å²),
    and the frames where a change starts (``changes``: (frame, condition, kind))."""

    name: str
    frames: np.ndarray
    pixel_size: float
    defocus: np.ndarray
    dose: np.ndarray
    changes: tuple[tuple[int, str, str], ...]
    optics: dict[str, float]
    source: np.ndarray | None = None  # per-frame source size σ (Å) where the stream changes it


def _data_dir() -> Path:
    return DATA if DATA.exists() else DATA_FALLBACK


def _clean() -> tuple[dict[float, np.ndarray], float]:
    d = _data_dir()
    index = json.loads((d / "index.json").read_text())
    clean = {
        float(f["defocus_A"]): np.load(d / f["file"]).astype(np.float64)
        for f in index["frames"]
        if f["dose_e_per_A2"] is None
    }
    return clean, float(index["pixel_size_A"])


def _at_defocus(clean: dict[float, np.ndarray], df: float) -> np.ndarray:
    keys = sorted(clean)
    df = float(np.clip(df, keys[0], keys[-1]))
    hi = next(k for k in keys if k >= df)
    lo = max(k for k in keys if k <= df)
    if hi == lo:
        return clean[lo]
    t = (df - lo) / (hi - lo)
    return (1 - t) * clean[lo] + t * clean[hi]


def _crop(image: np.ndarray, r: float, c: float, side: int, jitter: np.ndarray | None) -> np.ndarray:
    rows = (int(np.floor(r)) + np.arange(side)) % image.shape[0]
    x = c + np.arange(side)[None, :] + (0.0 if jitter is None else jitter[:, None])
    x0 = np.floor(x).astype(np.int64)
    f = x - x0
    out = (
        image[rows[:, None], x0 % image.shape[1]] * (1 - f)
        + image[rows[:, None], (x0 + 1) % image.shape[1]] * f
    )
    return out


def build(
    name: str,
    defocus: np.ndarray,
    dose: np.ndarray,
    changes: tuple[tuple[int, str, str], ...],
    *,
    side: int = 128,
    crops: str = "random",
    seed: int = 0,
    clean: tuple[dict[float, np.ndarray], float] | None = None,
    source: np.ndarray | None = None,
) -> Stream:
    """A stream with per-frame ``defocus`` (Å) and ``dose`` (e/Å²); ``crops`` random or drifting.

    ``clean``: noise-free frames by defocus (Å) and their pixel size (Å/px), default the abTEM
    graphene ones (which carry their 0.35 Å source blur already); ``source``: per-frame source
    size σ (Å) applied to them as a Gaussian blur (periodic frames: wrapped), default none.
    """
    clean, p = _clean() if clean is None else clean
    blurred: dict[float, dict[float, np.ndarray]] = {}
    if source is not None:
        for s in np.unique(source):
            blurred[float(s)] = {
                df: gaussian_filter(im, float(s) / p, mode="wrap") for df, im in clean.items()
            }
    rng = np.random.default_rng(seed)
    n = len(defocus)
    h, w = next(iter(clean.values())).shape
    pos = np.array([rng.uniform(0, h), rng.uniform(0, w)])
    frames = np.empty((n, side, side), dtype=np.float32)
    for i in range(n):
        if crops == "random":
            pos = np.array([rng.uniform(0, h), rng.uniform(0, w)])
            jitter = None
        else:
            # Sample drift ~0.02 Å/frame as on the twin, plus 0.15 px rms scan-line jitter.
            pos = pos + rng.normal(0.0, 0.2, 2) + np.array([0.2, 0.1])
            jitter = rng.normal(0.0, 0.15, side)
        images = clean if source is None else blurred[float(source[i])]
        expected = _crop(_at_defocus(images, defocus[i]), pos[0], pos[1], side, jitter) * dose[i] * p**2
        frames[i] = rng.poisson(np.clip(expected, 0, None))
    return Stream(
        name,
        frames,
        p,
        np.asarray(defocus, float),
        np.asarray(dose, float),
        changes,
        {"voltage_kv": 60.0, "semiangle_mrad": 25.0},
        None if source is None else np.asarray(source, float),
    )


def issue_stream(side: int = 128, seed: int = 0) -> Stream:
    """The stream of issue #13: in focus at 2e7 (0-199), defocus 80 Å (200-399), in focus at 2e6."""
    df = np.r_[np.zeros(200), np.full(200, 80.0), np.zeros(200)]
    dose = np.r_[np.full(400, 2e7), np.full(200, 2e6)]
    return build(
        "abtem-issue", df, dose, ((200, "defocus", "step"), (400, "dose", "step")), side=side, seed=seed
    )


def goal_steps(side: int = 128, seed: int = 1, crops: str = "drifting") -> Stream:
    """The goal's smallest changes, one at a time with 120 quiet frames after each:
    dose ×0.3, back, defocus +40 Å, back, dose ×3."""
    seg = 120
    df = np.r_[np.zeros(3 * seg), np.full(seg, 40.0), np.zeros(2 * seg)]
    dose = np.r_[np.full(2 * seg, 2e7), np.full(seg, 2e7), np.full(2 * seg, 2e7), np.full(seg, 6e7)]
    dose[seg : 2 * seg] = 6e6
    changes = (
        (seg, "dose", "step"),
        (2 * seg, "dose", "step"),
        (3 * seg, "defocus", "step"),
        (4 * seg, "defocus", "step"),
        (5 * seg, "dose", "step"),
    )
    return build(f"abtem-steps-{crops}", df, dose, changes, side=side, seed=seed, crops=crops)


def ramps(side: int = 128, seed: int = 2) -> Stream:
    """Defocus 0 → 80 Å over 100 frames from 200; then (after 150 quiet frames at 80 Å) dose
    2e7 → 2e6 log-linearly over 100 frames from 450."""
    n = 700
    t = np.arange(n)
    df = np.clip((t - 200) / 100, 0, 1) * 80.0
    dose = np.exp(np.log(2e7) + np.clip((t - 450) / 100, 0, 1) * (np.log(2e6) - np.log(2e7)))
    return build(
        "abtem-ramps",
        df,
        dose,
        ((200, "defocus", "ramp"), (450, "dose", "ramp")),
        side=side,
        seed=seed,
        crops="drifting",
    )


def stationary(n: int = 1000, side: int = 128, seed: int = 3, crops: str = "drifting") -> Stream:
    """No change: crops (drifting with scan jitter, or random) at 2e7, in focus."""
    name = "abtem-stationary" + ("" if crops == "drifting" else f"-{crops}")
    return build(name, np.zeros(n), np.full(n, 2e7), (), side=side, seed=seed, crops=crops)


def log_ramp(n: int, start: int, frames: int, ratio: float) -> np.ndarray:
    """Per-frame factor 1 → ``ratio`` log-linearly over ``frames`` frames from ``start``, then held."""
    return np.exp(np.clip((np.arange(n) - start) / frames, 0, 1) * np.log(ratio))


def slow_dose_ramps(
    dose0: float = 2e7,
    side: int = 128,
    seed: int = 5,
    name: str = "abtem-dose-ramps",
    frames: int = 150,
    **kw,
) -> Stream:
    """Dose ×1 → ×0.3 over ``frames`` frames from 200, then (150 quiet frames) ×1 → ×3 of that
    over ``frames`` frames: ramps the window statistics see as small steps, or (long ramps)
    not at all (drifting crops, in focus). ``kw``: ``build``'s (``clean``, ``source``)."""
    second = 200 + frames + 150
    n = second + frames + 150
    dose = dose0 * log_ramp(n, 200, frames, 0.3) * log_ramp(n, second, frames, 3.0)
    changes = ((200, "dose", "ramp"), (second, "dose", "ramp"))
    return build(name, np.zeros(n), dose, changes, side=side, seed=seed, crops="drifting", **kw)


def source_sizes(base: float, extra: float, n: int, start: int, frames: int) -> np.ndarray:
    """Per-frame source size σ (Å) from ``base`` to ``base + extra`` linearly over ``frames``
    frames from ``start``, in 0.01 Å steps (each step's blur is computed once)."""
    t = np.clip((np.arange(n) - start) / frames, 0, 1)
    return np.round((base + extra * t) / 0.01) * 0.01


def slow_source_ramp(
    base: float = 0.35,
    side: int = 128,
    seed: int = 6,
    name: str = "abtem-source-ramp",
    frames: int = 150,
    **kw,
) -> Stream:
    """Source size ``base`` → ``base`` + 0.3 Å over ``frames`` frames from 200 (drifting crops,
    in focus, 2e7 e/Å²), then 150 quiet frames. The abTEM graphene frames carry a ``base``
    source blur already: the added Gaussian blur is the difference in quadrature. ``kw``:
    ``build``'s (``clean``, ``dose0``)."""
    n = 200 + frames + 150
    total = source_sizes(base, 0.3, n, 200, frames)
    dose0 = kw.pop("dose0", 2e7)
    # (A caller's noise-free frames carry no source blur: theirs is all added.)
    added = np.sqrt(np.maximum(total**2 - base**2, 0.0)) if kw.get("clean") is None else total
    st = build(
        name,
        np.zeros(n),
        np.full(n, dose0),
        ((200, "blur", "ramp"),),
        side=side,
        seed=seed,
        crops="drifting",
        source=np.round(added, 4),
        **kw,
    )
    return Stream(st.name, st.frames, st.pixel_size, st.defocus, st.dose, st.changes, st.optics, total)
