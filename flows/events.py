"""Prefect events scopeflow emits (names under ``scopeflow.``, resource = the instrument)."""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

#: What the edge emits when member selection cannot absorb drift; the retrain deployment listens.
DRIFT_EVENT = "scopeflow.drift.detected"


def instrument_resource(name: str) -> dict[str, str]:
    """The event resource naming an instrument: ``scopeflow.instrument.<name>``."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)
    return {"prefect.resource.id": f"scopeflow.instrument.{safe}", "prefect.resource.name": name}


def emit_drift(
    instrument: str,
    dataset: str,
    frame_start: int,
    frame_end: int,
    members: list[int],
    scores: dict[str, float],
    model_version: str,
    attribution: dict[str, Any] | None = None,
) -> Any:
    """Announce drift that member selection could not absorb; the retrain deployment listens.

    ``attribution``: what changed and by how much (``changed``, ``summary`` and the estimates in
    physical units, e.g. ``dose_ratio``, ``defocus_A``), as the monitor named it.
    """
    return emit_event(
        event=DRIFT_EVENT,
        resource=instrument_resource(instrument),
        payload={
            "dataset": dataset,
            "frame_start": int(frame_start),
            "frame_end": int(frame_end),
            "members": ",".join(map(str, members)),
            "scores": {k: float(v) for k, v in scores.items()},
            "model_version": model_version,
            "attribution": {
                k: (float(v) if isinstance(v, float) else v) for k, v in (attribution or {}).items()
            },
        },
    )
