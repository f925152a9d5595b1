"""Drift detector scores per batch, the firing line and the actions taken."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .render import new_figure, to_png

ACTION_COLOURS = {"select": "tab:orange", "retrain": "tab:red"}


def drift_timeline(decisions: Mapping[str, np.ndarray], *, title: str = "drift") -> bytes:
    """PNG of the decisions table (``storage.datasets.decisions.read_decisions`` columns).

    Each ``score_<detector>`` column is plotted at its batch's end frame; scores are in units
    of the detector's threshold, so the line at 1 is where a detector fires. Batches whose
    action was ``select`` or ``retrain`` are shaded.
    """
    fig = new_figure(6.4, 3.2)
    ax = fig.add_subplot()
    ends = np.asarray(decisions.get("frame_end", np.zeros(0)), np.float64)
    starts = np.asarray(decisions.get("frame_start", ends), np.float64)
    actions = [str(a) for a in decisions.get("action", [])]
    for name in sorted(k for k in decisions if k.startswith("score_")):
        ax.plot(ends, np.asarray(decisions[name], np.float64), marker=".", label=name.removeprefix("score_"))
    for start, end, action in zip(starts, ends, actions, strict=False):
        if action in ACTION_COLOURS:
            ax.axvspan(start, end, color=ACTION_COLOURS[action], alpha=0.15, linewidth=0)
    ax.axhline(1.0, color="k", linestyle="--", linewidth=0.8, label="threshold")
    ax.set_xlabel("frame")
    ax.set_ylabel("score / threshold")
    ax.set_title(title if len(ends) else f"{title}: no decisions yet")
    if len(ends):
        ax.legend(loc="upper left", fontsize="small")
    return to_png(fig)
