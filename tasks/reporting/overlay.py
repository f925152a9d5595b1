"""A frame with its atom columns drawn on it."""

from __future__ import annotations

import numpy as np

from scopeflow.errors import InputError

from .render import new_figure, to_png


def atom_overlay(
    frame: np.ndarray,
    rowcol: np.ndarray,
    uncertainty: np.ndarray | None = None,
    *,
    title: str = "",
    pixel_size: float | None = None,
) -> bytes:
    """PNG of ``frame`` (H, W counts) with columns at ``rowcol`` (n, 2) px, coloured by ``uncertainty``.

    ``pixel_size`` (Å/px) adds a scale to the axis labels; uncertainty is the ensemble's
    heatmap standard deviation (0–0.5), shown on a fixed 0–0.25 colour scale so figures of
    different batches compare.
    """
    frame = np.asarray(frame, np.float32)
    rowcol = np.asarray(rowcol, np.float32).reshape(-1, 2)
    if frame.ndim != 2:
        raise InputError(f"atom_overlay needs one 2-D frame, got shape {frame.shape}")
    fig = new_figure(5.0, 5.0)
    ax = fig.add_subplot()
    lo, hi = np.percentile(frame, [1, 99.5]) if frame.size else (0.0, 1.0)
    ax.imshow(frame, cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6), interpolation="nearest")
    if len(rowcol):
        colours = np.zeros(len(rowcol)) if uncertainty is None else np.asarray(uncertainty, np.float32)
        points = ax.scatter(
            rowcol[:, 1], rowcol[:, 0], c=colours, s=14, cmap="plasma", vmin=0.0, vmax=0.25, linewidths=0
        )
        if uncertainty is not None:
            fig.colorbar(points, ax=ax, shrink=0.8, label="uncertainty (heatmap std)")
    unit = f" (px, {pixel_size:.3f} Å/px)" if pixel_size else " (px)"
    ax.set_xlabel("column" + unit)
    ax.set_ylabel("row" + unit)
    ax.set_title(title or f"{len(rowcol)} atom columns")
    return to_png(fig)
