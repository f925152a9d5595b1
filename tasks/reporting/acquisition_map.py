"""A DKL acquisition function over the candidate points, with measured and next points."""

from __future__ import annotations

import numpy as np

from scopeflow.errors import InputError

from .render import new_figure, to_png


def acquisition_map(
    candidates: np.ndarray,
    values: np.ndarray,
    measured: np.ndarray | None = None,
    chosen: np.ndarray | None = None,
    *,
    background: np.ndarray | None = None,
    title: str = "acquisition",
    label: str = "acquisition value",
) -> bytes:
    """PNG of ``values`` (n,) at ``candidates`` (n, 2) as (row, col) px of the survey image.

    ``measured`` (m, 2) are the points already measured, ``chosen`` (k, 2) the next ones;
    ``background`` (H, W), when given, is the survey image under the map.
    """
    cand = np.asarray(candidates, np.float64).reshape(-1, 2)
    vals = np.asarray(values, np.float64).reshape(-1)
    if len(cand) != len(vals):
        raise InputError(f"{len(cand)} candidates but {len(vals)} acquisition values")
    fig = new_figure(5.4, 5.0)
    ax = fig.add_subplot()
    if background is not None:
        ax.imshow(np.asarray(background, np.float32), cmap="gray", interpolation="nearest")
    points = ax.scatter(cand[:, 1], cand[:, 0], c=vals, s=16, cmap="viridis", alpha=0.8, linewidths=0)
    fig.colorbar(points, ax=ax, shrink=0.8, label=label)
    if measured is not None and len(measured):
        m = np.asarray(measured, np.float64).reshape(-1, 2)
        ax.scatter(m[:, 1], m[:, 0], marker="x", c="white", s=30, label="measured")
    if chosen is not None and len(chosen):
        c = np.asarray(chosen, np.float64).reshape(-1, 2)
        ax.scatter(c[:, 1], c[:, 0], marker="*", c="red", s=120, label="next")
    if background is None:
        ax.invert_yaxis()  # rows grow downwards, as in the survey image
        ax.set_aspect("equal")
    ax.set_xlabel("column (px)")
    ax.set_ylabel("row (px)")
    ax.set_title(title)
    if (measured is not None and len(measured)) or (chosen is not None and len(chosen)):
        ax.legend(loc="upper right", fontsize="small")
    return to_png(fig)
