"""Autonomous exploration as a Prefect flow: the twin's survey, then a GP chooses where to measure.

The loop is ``tasks.active.campaign_loop.run_campaign`` (plain Python); this module picks the
twin as the instrument and the property's scalarizer (``explore``), and ``explore_flow`` adds
artifacts at every step (progress, the measured map with the proposed points, the hypotheses'
weights) and an optional gate that pauses each batch for a person's answer in the Prefect UI:
approve, reject, or replace the points, with a note. No answer within ``gate_timeout`` s
measures the proposed batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
from prefect import flow, get_run_logger
from prefect.input import RunInput
from pydantic import Field

from scopeflow.errors import InputError
from tasks.acquisition.instrument import Instrument, Spectrometer
from tasks.active import BandIntensity, PeakPosition, PeakRatio, Proposal, Scalarizer
from tasks.active.campaign_loop import PROPERTIES, Answer, Approve, ExploreConfig, ExploreResult, run_campaign


def scalarizer_for(prop: str, lattice: str) -> Scalarizer:
    """The scalarizer of a named property on a lattice's low-loss spectrum."""
    from tasks.acquisition.twin.spectra import PEAKS

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


def nominal_value(prop: str, lattice: str) -> float:
    """The property's expected value on a pristine lattice (what hypotheses' priors centre on)."""
    from tasks.acquisition.twin.spectra import PEAKS

    return PEAKS[lattice].plasmon_ev if prop == "plasmon" else 0.0


def build_twin(config: ExploreConfig) -> Instrument:
    """The twin whose sample the run explores."""
    # Imported here: the simulator is never loaded on a real instrument's path.
    from tasks.acquisition.twin import DigitalTwin, DriftSchedule

    base = {
        "lattice": config.lattice,
        "pixel_size": config.pixel_size,
        "vacancy_rate": config.vacancy_rate,
        "substitution_rate": config.substitution_rate,
    }
    return DigitalTwin(config.seed, schedule=DriftSchedule(base=base), name="twin-explore")


def twin_sources(config: ExploreConfig) -> tuple[Instrument, Spectrometer]:
    """The twin as the survey's instrument and its EELS channel as the spectrometer."""
    from tasks.acquisition.twin.spectra import SpectrumChannel

    twin = build_twin(config)
    return twin, SpectrumChannel(twin, config.frame, dwell=config.dwell)  # type: ignore[arg-type]


def explore(
    dataset: str | Path,
    config: ExploreConfig,
    *,
    sources: tuple[Instrument, Spectrometer] | None = None,
    approve: Approve | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> ExploreResult:
    """``run_campaign`` on the twin's sample (or ``sources``) for ``config.property``."""
    return run_campaign(
        dataset,
        config,
        sources=sources or twin_sources(config),
        scalarizer=scalarizer_for(config.property, config.lattice),
        nominal=nominal_value(config.property, config.lattice),
        approve=approve,
        on_step=on_step,
    )


class BatchAnswer(RunInput):
    """The operator's answer about the next batch (a form in the Prefect UI).

    ``decision``: approve (measure the proposed points), reject (skip them), or replace
    (measure ``points`` instead: (row, col) px of the survey, snapped to the nearest candidates).
    """

    decision: Literal["approve", "reject", "replace"] = "approve"
    points: list[tuple[float, float]] = Field(default_factory=list)
    note: str = ""


def _ask_operator(proposal: Proposal, rowcol: np.ndarray, context: dict[str, Any], timeout: int) -> Answer:
    """Pause the flow run for a person's answer about a batch; no answer within ``timeout`` s measures it."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run
    from prefect.states import Running

    logger = get_run_logger()
    where = ", ".join(f"({r}, {c})" for r, c in rowcol.tolist())
    leading = context.get("leading")
    _publish_proposal(proposal, rowcol, context)
    logger.info(
        "step %d: %s proposes probe positions %s%s; waiting %d s for an answer",
        proposal.step,
        proposal.how,
        where,
        f" (leading hypothesis: {leading})" if leading else "",
        timeout,
    )
    try:
        # Prefect polls every 10 s by default; a short gate would overrun its timeout by that much.
        poll = max(1, min(10, timeout // 10))
        answer = pause_flow_run(
            wait_for_input=BatchAnswer.with_initial_data(
                description=f"Step {proposal.step}: measure {where}?"
                + (f" Leading hypothesis: **{leading}**." if leading else "")
            ),
            timeout=timeout,
            poll_interval=poll,
            key=f"batch-{proposal.step}",
        )
    except FlowPauseTimeout:
        # Nobody answered: the experiment must not stall on an absent operator. The server
        # still holds the run as Paused (its pause expired), so put it back to Running.
        ctx = FlowRunContext.get()
        assert ctx is not None and ctx.flow_run is not None
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(ctx.flow_run.id, Running(message="approval timed out"), force=True)
        logger.info("step %d: no answer in %d s, measuring the proposed batch", proposal.step, timeout)
        return Answer("timeout")
    if answer.decision == "approve":
        return Answer("approved", note=answer.note)
    if answer.decision == "reject":
        logger.info("step %d: batch rejected by the operator (%s)", proposal.step, answer.note)
        return Answer("rejected", note=answer.note)
    logger.info("step %d: operator replaced the batch by %s (%s)", proposal.step, answer.points, answer.note)
    return Answer("replaced", points=[list(p) for p in answer.points], note=answer.note)


@flow(name="explore", log_prints=False)
def explore_flow(
    dataset: str,
    config: dict[str, Any] | None = None,
    gate: bool = False,
    gate_timeout: int = 300,
) -> dict[str, Any]:
    """Prefect flow around ``explore``: artifacts at every step, and optionally a human gate."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    cfg = ExploreConfig(**(config or {}))
    artifact = create_progress_artifact(
        0.0, key="explore-progress", description=f"exploration of {dataset}: nothing measured yet"
    )

    def step(state: dict[str, Any]) -> None:
        update_progress_artifact(artifact, min(state["percent"], 100.0), description=state["text"])
        _publish_map(state, cfg)
        if "weights" in state:
            _publish_weights(state["weights"], len(state["values"]))

    started = time.perf_counter()
    result = explore(
        dataset,
        cfg,
        approve=(lambda p, rc, context: _ask_operator(p, rc, context, gate_timeout)) if gate else None,
        on_step=step,
    )
    update_progress_artifact(
        artifact,
        100.0,
        description=f"done in {time.perf_counter() - started:.1f} s: "
        f"{result.n_measured} measured, best {result.best_value:.4g}",
    )
    if result.hypotheses:
        _publish_hypotheses(result.hypotheses)
    return asdict(result)


def _publish_map(state: dict[str, Any], cfg: ExploreConfig, chosen: np.ndarray | None = None) -> None:
    """The measured map as an image artifact over the survey (and the proposed points, if any)."""
    from flows.artifacts import publish_figure
    from tasks.reporting import acquisition_map

    png = acquisition_map(
        state["rowcol"],
        state["values"],
        measured=state["rowcol"],
        chosen=chosen,
        background=state["survey"],
        title=f"{'hypotheses' if cfg.hypotheses else cfg.model.upper()}: measured values",
        label="scalarized value",
    )
    publish_figure("explore-map", png, "where the surrogate chose to measure, and what it found")


def _publish_proposal(proposal: Proposal, rowcol: np.ndarray, context: dict[str, Any]) -> None:
    """The map with the proposed points marked, published before the gate asks about them."""
    from flows.artifacts import publish_figure
    from tasks.reporting import acquisition_map

    measured, values = context["rowcol"], context["values"]
    leading = context.get("leading")
    png = acquisition_map(
        measured if len(measured) else rowcol,
        values if len(values) else np.zeros(len(rowcol)),
        measured=measured,
        chosen=rowcol,
        background=context["survey"],
        title=f"step {proposal.step}: proposed by {proposal.how}"
        + (f" (leading: {leading})" if leading else ""),
        label="scalarized value",
    )
    publish_figure("explore-proposal", png, f"step {proposal.step}: the points awaiting an answer (crosses)")


def _publish_weights(weights: dict[str, float], n: int) -> None:
    from prefect.artifacts import create_table_artifact

    create_table_artifact(
        key="explore-hypotheses",
        table=[{"hypothesis": k, "weight": round(v, 4)} for k, v in weights.items()],
        description=f"running posterior weights after {n} measurements (held-out likelihood)",
    )


def _publish_hypotheses(report: dict[str, Any]) -> None:
    from prefect.artifacts import create_table_artifact

    rows = [
        {
            "hypothesis": h["name"],
            "weight": round(h["weight"], 4),
            "chosen": h["chosen"],
            "parameters": ", ".join(f"{k} = {v:.4g} ± {h['sd'][k]:.2g}" for k, v in h["params"].items()),
        }
        for h in report["hypotheses"]
    ]
    create_table_artifact(
        key="explore-hypotheses-final",
        table=rows,
        description=f"posterior weights (Laplace evidence) and fitted laws; best: {report['best']}",
    )
