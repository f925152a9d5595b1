"""Autonomous exploration: a survey image, then DKL chooses where to measure spectra next.

``explore`` is the plain function (no Prefect needed); ``explore_flow`` wraps it with a
progress artifact and an optional human gate that pauses for approval of each batch in the
Prefect UI and carries on by itself after ``gate_timeout`` s.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from prefect import flow, get_run_logger
from prefect.input import RunInput

import scopeflow
from scopeflow.errors import InputError
from storage.datasets import DatasetWriter
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.acquisition.twin.spectra import PEAKS, SpectrumChannel
from tasks.active import (
    BandIntensity,
    Campaign,
    GPSurrogate,
    PeakPosition,
    PeakRatio,
    Proposal,
    Scalarizer,
    candidate_grid,
    extract_patches,
    make_scorer,
    standardise,
)
from tasks.active.measurement_log import MeasurementLog

PROPERTIES = ("dopant", "defect", "plasmon")
Approval = Literal["auto", "approved", "rejected", "timeout"]


@dataclass(frozen=True)
class ExploreConfig:
    """Settings of one exploration (the twin's sample, the candidate grid, the model, the budget).

    ``budget`` counts measurements; ``budget_seconds`` (if set) caps instrument time, s;
    ``target`` (if set) stops the run once a measured value reaches it.
    """

    seed: int = 0
    lattice: str = "graphene"
    pixel_size: float = 0.16  # Å/px
    vacancy_rate: float = 0.03
    substitution_rate: float = 0.02
    frame: int = 0
    patch: int = 24  # px
    stride: int = 4  # px between candidates
    margin: int = 18  # px: 55 × 55 = 3025 candidates on a 256² survey
    property: str = "dopant"
    model: str = "dkl"  # dkl | gp
    acquisition: str = "ei"
    beta: float = 4.0
    batch: int = 1
    n_initial: int = 5
    budget: int = 90
    budget_seconds: float | None = None
    target: float | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        if self.property not in PROPERTIES:
            raise InputError(f"unknown property {self.property!r}; known: {', '.join(PROPERTIES)}")
        if self.lattice not in PEAKS:
            raise InputError(f"unknown lattice {self.lattice!r}; known: {', '.join(PEAKS)}")
        if self.model not in ("dkl", "gp"):
            raise InputError(f"unknown model {self.model!r}; known: dkl, gp")
        if self.budget < 1 or self.batch < 1:
            raise InputError("budget and batch must be ≥ 1")


@dataclass
class ExploreResult:
    """What a run did: measurements, the best value, whether the target was met, timings (s)."""

    dataset: str
    n_measured: int
    best_value: float
    best_rowcol: list[float]
    target_found: bool
    steps: int
    instrument_seconds: float
    decision_seconds: list[float] = field(default_factory=list)
    approvals: dict[str, int] = field(default_factory=dict)


def scalarizer_for(prop: str, lattice: str) -> Scalarizer:
    """The scalarizer of a named property on a lattice's low-loss spectrum."""
    p = PEAKS[lattice]
    if prop == "dopant":
        return BandIntensity(p.dopant_ev - 0.8, p.dopant_ev + 0.8, flank=1.0)
    if prop == "defect":
        return PeakRatio(
            BandIntensity(p.defect_ev - 0.6, p.defect_ev + 0.6, flank=0.6),
            BandIntensity(p.plasmon_ev - p.plasmon_fwhm, p.plasmon_ev + p.plasmon_fwhm),
        )
    if prop == "plasmon":
        return PeakPosition(p.plasmon_ev - 2 * p.plasmon_fwhm, p.plasmon_ev + 2 * p.plasmon_fwhm)
    raise InputError(f"unknown property {prop!r}; known: {', '.join(PROPERTIES)}")


def build_twin(config: ExploreConfig) -> DigitalTwin:
    """The twin whose sample the run explores."""
    base = {
        "lattice": config.lattice,
        "pixel_size": config.pixel_size,
        "vacancy_rate": config.vacancy_rate,
        "substitution_rate": config.substitution_rate,
    }
    return DigitalTwin(config.seed, schedule=DriftSchedule(base=base), name="twin-explore")


def explore(
    dataset: str | Path,
    config: ExploreConfig,
    *,
    approve: Callable[[Proposal, np.ndarray], Approval] | None = None,
    on_progress: Callable[[float, str], None] | None = None,
) -> ExploreResult:
    """Survey, then fit/choose/measure/record until the budget is spent or the target found.

    ``approve(proposal, rowcol)`` may veto a batch (``"rejected"``: its points are never
    proposed again); ``on_progress(percent, text)`` hears about every batch.
    """
    torch.set_num_threads(config.threads)
    twin = build_twin(config)
    survey = twin.acquire(config.frame)
    writer = DatasetWriter.open(dataset, twin.state())
    if writer.n_frames == 0:
        writer.append([survey])
    channel = SpectrumChannel(twin, config.frame)
    scalarizer = scalarizer_for(config.property, config.lattice)
    rowcol = candidate_grid(survey.image.shape, config.stride, config.margin)
    inputs = standardise(extract_patches(survey.image, rowcol, config.patch))
    surrogate = (
        GPSurrogate.dkl(inputs, seed=config.seed) if config.model == "dkl" else GPSurrogate.plain(inputs)
    )
    acquisition = make_scorer(config.acquisition, beta=config.beta)
    campaign = Campaign(surrogate, acquisition, n_initial=config.n_initial, seed=config.seed)
    log = MeasurementLog(
        dataset,
        channel.energy,
        {
            "started": dt.datetime.now(dt.UTC).isoformat(),
            "scopeflow_version": scopeflow.__version__,
            "config": asdict(config),
            "survey_frame": config.frame,
            "n_candidates": len(rowcol),
            "channel": channel.state(),
            "scalarizer": scalarizer.describe(),
            "surrogate": surrogate.kind if config.model == "gp" else "dkl",
            "acquisition": acquisition.name,
        },
    )
    result = ExploreResult(str(dataset), 0, float("-inf"), [], False, 0, 0.0)
    while len(campaign.measured) < config.budget:
        if config.budget_seconds is not None and result.instrument_seconds >= config.budget_seconds:
            break
        k = min(config.batch, config.budget - len(campaign.measured))
        proposal = campaign.propose(k)
        result.decision_seconds.append(proposal.decision_seconds)
        verdict: Approval = approve(proposal, rowcol[proposal.indices]) if approve else "auto"
        result.approvals[verdict] = result.approvals.get(verdict, 0) + 1
        if verdict == "rejected":
            campaign.skip(proposal.indices)
            continue
        measurement = channel.measure(rowcol[proposal.indices])
        values = scalarizer(measurement.energy, measurement.counts)
        campaign.record(proposal.indices, values)
        log.append(
            rowcol=measurement.rowcol,
            candidate=proposal.indices,
            spectra=measurement.counts,
            values=values,
            step=proposal.step,
            acquisition=proposal.how,
            approval=verdict,
            predicted_mean=proposal.predicted_mean,
            predicted_std=proposal.predicted_std,
            seconds=measurement.seconds,
            dose=measurement.dose,
        )
        result.steps = proposal.step
        result.instrument_seconds += float(measurement.seconds.sum())
        best = int(np.argmax(campaign.values))
        result.best_value = campaign.values[best]
        result.best_rowcol = [float(v) for v in rowcol[campaign.measured[best]]]
        result.n_measured = len(campaign.measured)
        if config.target is not None and result.best_value >= config.target:
            result.target_found = True
        if on_progress:
            on_progress(
                100.0 * result.n_measured / config.budget,
                f"{result.n_measured}/{config.budget} measured, best {result.best_value:.4g} "
                f"at (row, col) {result.best_rowcol}",
            )
        if result.target_found:
            break
    return result


class BatchApproval(RunInput):
    """What the operator answers when the flow asks about the next batch."""

    approve: bool = True
    note: str = ""


def _ask_operator(proposal: Proposal, rowcol: np.ndarray, timeout: int) -> Approval:
    """Pause the flow run for approval of a batch; no answer within ``timeout`` s approves it."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run
    from prefect.states import Running

    logger = get_run_logger()
    where = ", ".join(f"({r}, {c})" for r, c in rowcol.tolist())
    logger.info(
        "step %d: %s proposes probe positions %s; waiting %d s for approval",
        proposal.step,
        proposal.how,
        where,
        timeout,
    )
    try:
        # Prefect polls every 10 s by default; a short gate would overrun its timeout by that much.
        poll = max(1, min(10, timeout // 4))
        answer = pause_flow_run(
            wait_for_input=BatchApproval, timeout=timeout, poll_interval=poll, key=f"batch-{proposal.step}"
        )
    except FlowPauseTimeout:
        # Nobody answered: the experiment must not stall on an absent operator. The server
        # still holds the run as Paused (its pause expired), so put it back to Running.
        ctx = FlowRunContext.get()
        assert ctx is not None and ctx.flow_run is not None
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(ctx.flow_run.id, Running(message="approval timed out"), force=True)
        logger.info("step %d: no answer in %d s, measuring the proposed batch", proposal.step, timeout)
        return "timeout"
    if answer.approve:
        return "approved"
    logger.info("step %d: batch rejected by the operator (%s)", proposal.step, answer.note)
    return "rejected"


@flow(name="explore", log_prints=False)
def explore_flow(
    dataset: str,
    config: dict[str, Any] | None = None,
    gate: bool = False,
    gate_timeout: int = 300,
) -> dict[str, Any]:
    """Prefect flow around ``explore``: a progress artifact, and optionally a human gate."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    cfg = ExploreConfig(**(config or {}))
    artifact = create_progress_artifact(
        0.0, key="explore-progress", description=f"exploration of {dataset}: nothing measured yet"
    )

    def progress(percent: float, text: str) -> None:
        update_progress_artifact(artifact, min(percent, 100.0), description=text)

    started = time.perf_counter()
    result = explore(
        dataset,
        cfg,
        approve=(lambda p, rc: _ask_operator(p, rc, gate_timeout)) if gate else None,
        on_progress=progress,
    )
    update_progress_artifact(
        artifact,
        100.0,
        description=f"done in {time.perf_counter() - started:.1f} s: "
        f"{result.n_measured} measured, best {result.best_value:.4g}",
    )
    _publish_map(dataset, cfg)
    return asdict(result)


def _publish_map(dataset: str, cfg: ExploreConfig) -> None:
    """The measured map as an image artifact: each measured point's scalarized value over the survey."""
    from flows.artifacts import publish_figure
    from storage.datasets import open_dataset
    from tasks.reporting import acquisition_map

    survey = open_dataset(dataset)["frames"].isel(frame=0).values
    measured = xr.open_zarr(dataset, group="measurements")
    rowcol = np.stack([measured["row"].values, measured["col"].values], axis=1)
    png = acquisition_map(
        rowcol,
        measured["value"].values,
        measured=rowcol,
        background=survey,
        title=f"{cfg.model.upper()} exploration: measured values",
        label="scalarized value",
    )
    publish_figure("explore-map", png, "where the surrogate chose to measure, and what it found")
