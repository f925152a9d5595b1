"""Keyed Prefect artifacts the flows publish: a per-batch table, progress, a summary, images.

Call these from inside a flow run (or a task run). Keys are lower-case with dashes (Prefect's
rule) and stable across runs, so the UI's artifact page shows the history of each key:

- ``BatchTable``: one row per batch (frames, atoms, uncertainty, drift scores, model version),
  published once, complete, at the end of the run (``interval_s`` re-publishes while it grows);
- ``Progress``: a progress artifact updated in place (percent);
- ``publish_summary``: a markdown summary with links (images, the dataset, the runs);
- ``publish_figure``: a PNG as an image artifact (embedded in it) and served by ``storage.media``.
"""

from __future__ import annotations

import base64
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from scopeflow.errors import InputError
from storage.media import publish_image

_KEY_RE = re.compile(r"^[a-z0-9-]+$")


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key from free text: lower case, digits and dashes only."""
    key = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    if not key or not _KEY_RE.match(key):
        raise InputError(f"no artifact key can be made from {parts!r}")
    return key


def _cell(value: Any) -> Any:
    """A table cell Prefect can show (floats rounded, NaN as empty)."""
    if isinstance(value, float):
        return "" if math.isnan(value) else round(value, 4)
    if hasattr(value, "item"):  # numpy scalars
        return _cell(value.item())
    return value


@dataclass
class BatchTable:
    """The per-batch table of a run under ``key``; ``add`` appends a row, ``publish`` shows it.

    Prefect tables are immutable, so each publication is one more artifact in the run's list
    (the run then showed the same table several times): by default ``add`` only collects and
    ``publish()``, called once at the end, shows the complete table. A finite ``interval_s``
    re-publishes at most that often, for runs long enough to want a table before they end.
    """

    key: str
    description: str = ""
    interval_s: float = math.inf
    rows: list[dict[str, Any]] = field(default_factory=list)
    _last: float = field(default=-math.inf, repr=False)
    _published_rows: int = field(default=0, repr=False)

    def add(
        self,
        *,
        frame_start: int,
        frame_end: int,
        atoms: int,
        model_version: str,
        uncertainty: float = float("nan"),
        seconds: float = float("nan"),
        f1: float | None = None,
        drift: Mapping[str, float] | None = None,
        **extra: Any,
    ) -> UUID | None:
        """Append a batch (frames ``frame_start``–``frame_end`` inclusive; ``uncertainty`` the mean
        per-atom heatmap std; ``drift`` detector scores in units of their thresholds)."""
        row: dict[str, Any] = {
            "frames": f"{frame_start}-{frame_end}",
            "atoms": int(atoms),
            "uncertainty": uncertainty,
            "model_version": model_version,
            "seconds": seconds,
        }
        if f1 is not None:
            row["f1"] = f1
        row.update({f"drift_{k}": v for k, v in (drift or {}).items()})
        row.update(extra)
        self.rows.append({k: _cell(v) for k, v in row.items()})
        if math.isfinite(self.interval_s) and time.monotonic() - self._last >= self.interval_s:
            return self.publish()
        return None

    def publish(self) -> UUID | None:
        """Publish the whole table now, unless nothing was added since the last publication."""
        if self._published_rows == len(self.rows) and self.rows:
            return None
        self._last = time.monotonic()
        self._published_rows = len(self.rows)
        columns = list(dict.fromkeys(k for r in self.rows for k in r))
        table = [{c: r.get(c, "") for c in columns} for r in self.rows]
        return create_table_artifact(table, key=self.key, description=self.description)


class Progress:
    """A progress artifact under ``key``, updated in place; ``update(done, total)``."""

    def __init__(self, key: str, description: str = "") -> None:
        self.id = create_progress_artifact(0.0, key=key, description=description)

    def update(self, done: float, total: float) -> float:
        """Set the progress to ``done / total`` (percent, clamped to 0–100); returns it."""
        percent = 100.0 if total <= 0 else min(100.0, max(0.0, 100.0 * done / total))
        update_progress_artifact(self.id, percent)
        return percent


def publish_figure(key: str, png: bytes, description: str = "") -> str:
    """Publish ``png`` as the image artifact ``key`` and serve it (``storage.media``); returns the
    served URL (for markdown summaries).

    The artifact carries the image itself as a ``data:`` URL, so it stays viewable for as long
    as the artifact exists: a URL of a media server ends with that server (a run outside
    ``scopeflow up`` serves its figures only while it lives). Figures are tens of kB.
    """
    url = publish_image(png, key)
    embedded = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    create_image_artifact(image_url=embedded, key=key, description=description or None)
    return url


def publish_summary(
    key: str,
    title: str,
    facts: Mapping[str, Any],
    links: Mapping[str, str] | None = None,
    images: Sequence[tuple[str, str]] = (),
) -> UUID:
    """A markdown summary: ``facts`` as a list, ``links`` (label → URL) and inline ``images``
    ((caption, URL) pairs, e.g. from ``publish_figure``)."""
    lines = [f"## {title}", ""]
    lines += [f"- {name}: **{_cell(value)}**" for name, value in facts.items()]
    if links:
        lines += ["", "### Links", ""] + [f"- [{label}]({url})" for label, url in links.items()]
    for caption, url in images:
        lines += ["", f"![{caption}]({url})"]
    return create_markdown_artifact(markdown="\n".join(lines) + "\n", key=key, description=title)


def publish_edge_run(prefix: str, dataset: str, reports: Sequence[Any]) -> list[tuple[str, str]]:
    """The edge loop's artifacts under ``<prefix>-…``: the per-batch table (frames, atoms,
    uncertainty, drift scores, action, model version, F1), an atom overlay of the last frame,
    the drift timeline and F1 over time. Returns (caption, URL) pairs for a summary."""
    import numpy as np

    from storage.datasets import open_dataset
    from storage.datasets.decisions import read_decisions
    from tasks.reporting import atom_overlay, drift_timeline, f1_timeline

    if not reports:
        return []
    table = BatchTable(f"{prefix}-batches", f"edge batches of {dataset}")
    for r in reports:
        atoms = r.outcome.atoms
        uncertainties = [float(np.mean(a.uncertainty)) for a in atoms if len(a)]
        table.add(
            frame_start=r.outcome.start,
            frame_end=r.stop - 1,
            atoms=sum(len(a) for a in atoms),
            model_version=r.outcome.model_version,
            uncertainty=float(np.mean(uncertainties)) if uncertainties else float("nan"),
            seconds=r.seconds,
            f1=r.scores.f1 if r.scores is not None else None,
            drift=r.outcome.decision.scores,
            action=r.outcome.action,
        )
    table.publish()
    last = reports[-1]
    ds = open_dataset(dataset)
    i = last.stop - 1
    images = [
        (
            "atom overlay",
            publish_figure(
                f"{prefix}-overlay",
                atom_overlay(
                    ds["frames"].isel(frame=i).values,
                    last.outcome.atoms[-1].rowcol,
                    last.outcome.atoms[-1].uncertainty,
                    title=f"frame {i} ({last.outcome.model_version})",
                    pixel_size=float(ds["pixel_size"].values[i]),
                ),
                f"frame {i}",
            ),
        ),
        (
            "drift timeline",
            publish_figure(f"{prefix}-drift", drift_timeline(read_decisions(dataset)), "drift scores"),
        ),
    ]
    scored = [r for r in reports if r.scores is not None]
    if scored:
        png = f1_timeline(
            [r.stop - 1 for r in scored],
            [r.scores.f1 for r in scored],
            [r.outcome.model_version for r in scored],
        )
        images.append(("F1 over time", publish_figure(f"{prefix}-f1", png, "F1 against the twin's truth")))
    return images
