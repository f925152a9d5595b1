"""F1 against ground truth over the frames, one line per model version."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scopeflow.errors import InputError

from .render import new_figure, to_png


def f1_timeline(
    frames: Sequence[int], f1: Sequence[float], versions: Sequence[str] | None = None, *, title: str = "F1"
) -> bytes:
    """PNG of F1 (0–1, columns matched within 0.5 Å) at each batch's last frame.

    ``versions`` (one per point) splits the line where the model changed (a promotion).
    """
    x = np.asarray(frames, np.float64)
    y = np.asarray(f1, np.float64)
    if x.shape != y.shape:
        raise InputError(f"{len(x)} frames but {len(y)} F1 values")
    labels = list(versions) if versions is not None else ["model"] * len(x)
    fig = new_figure(6.4, 3.2)
    ax = fig.add_subplot()
    for version in dict.fromkeys(labels):
        which = np.array([v == version for v in labels], bool)
        ax.plot(x[which], y[which], marker="o", markersize=3, label=version)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("frame")
    ax.set_ylabel("F1")
    ax.set_title(title if len(x) else f"{title}: no ground truth")
    if len(x):
        ax.legend(loc="lower left", fontsize="small")
    return to_png(fig)
