"""Autonomous exploration: a survey image, then a GP chooses where to measure spectra next.

``explore`` is the plain function (no Prefect needed); ``explore_flow`` wraps it with
artifacts at every step (progress, the measured map with the proposed points, the
hypotheses' weights) and an optional gate that pauses each batch for a person's answer in the
Prefect UI: approve, reject, or replace the points, with a note. No answer within
``gate_timeout`` s measures the proposed batch. A run on a dataset that already holds
measurements takes the campaign up where it stopped: earlier points are never measured again.
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
from prefect import flow, get_run_logger
from prefect.input import RunInput
from pydantic import Field

import scopeflow
from scopeflow.errors import InputError
from scopeflow.frame import Frame
from storage.datasets import DatasetWriter
from tasks.acquisition.instrument import Instrument, Spectrometer
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
from tasks.active.hypotheses import load_hypotheses
from tasks.active.hypothesis_learning import HypothesisCampaign, HypothesisReport
from tasks.active.measurement_log import MeasurementLog
from tasks.active.scalarizers import counting_sd

PROPERTIES = ("dopant", "defect", "plasmon")
LATTICES = ("graphene", "mos2", "perovskite")
Verdict = Literal["auto", "approved", "rejected", "replaced", "timeout"]


@dataclass(frozen=True)
class ExploreConfig:
    """Settings of one exploration (the twin's sample, the candidate grid, the model, the budget).

    ``budget`` counts measurements (earlier runs' included); ``budget_seconds`` (if set) caps
    this run's instrument time, s; ``target`` (if set) stops the run once a measured value
    reaches it. ``hypotheses`` (a .py file or module) switches to hypothesis learning.
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
    acquisition: str = "logei"
    beta: float = 4.0
    batch: int = 1
    n_initial: int = 5
    budget: int = 90
    budget_seconds: float | None = None
    target: float | None = None
    threads: int = 1
    dwell: float = 0.05  # s per spectrum
    hypotheses: str | None = None
    policy: str = "softmax"  # softmax | egreedy
    temperature: float = 1.0
    epsilon: float = 0.1

    def __post_init__(self) -> None:
        if self.property not in PROPERTIES:
            raise InputError(f"unknown property {self.property!r}; known: {', '.join(PROPERTIES)}")
        if self.lattice not in LATTICES:
            raise InputError(f"unknown lattice {self.lattice!r}; known: {', '.join(LATTICES)}")
        if self.model not in ("dkl", "gp"):
            raise InputError(f"unknown model {self.model!r}; known: dkl, gp")
        if self.budget < 1 or self.batch < 1:
            raise InputError("budget and batch must be ≥ 1")
        make_scorer(self.acquisition, beta=self.beta)  # a clear error for an unknown name
        if self.policy not in ("softmax", "egreedy"):
            raise InputError(f"unknown policy {self.policy!r}; known: softmax, egreedy")
        if self.temperature <= 0 or not 0 <= self.epsilon <= 1:
            raise InputError(
                f"need temperature > 0 and 0 ≤ epsilon ≤ 1, got {self.temperature}, {self.epsilon}"
            )
        if self.dwell <= 0:
            raise InputError(f"dwell must be > 0 s, got {self.dwell}")


@dataclass(frozen=True)
class Answer:
    """A person's answer about a proposed batch: the verdict, replacement points (row, col px)
    when ``verdict == "replaced"``, and a note."""

    verdict: Verdict
    points: list[list[float]] = field(default_factory=list)
    note: str = ""


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
    resumed_from: int = 0
    decision_seconds: list[float] = field(default_factory=list)
    approvals: dict[str, int] = field(default_factory=dict)
    hypotheses: dict[str, Any] | None = None


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
    approve: Callable[[Proposal, np.ndarray, dict[str, Any]], Answer] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> ExploreResult:
    """Survey, then fit/choose/measure/record until the budget is spent or the target found.

    ``sources`` are the instrument that takes the survey and the spectrometer (the twin's by
    default). ``approve(proposal, rowcol, context)`` may reject a batch (its points are never
    proposed again) or replace it by other points; ``context`` holds the leading hypothesis
    (or None), the points measured so far (``rowcol``, ``values``) and the ``survey`` image; ``on_step(state)`` hears about
    every batch measured (progress, the map, the hypotheses' weights).
    """
    torch.set_num_threads(config.threads)
    instrument, spectrometer = sources or twin_sources(config)
    survey = instrument.acquire(config.frame)
    writer = DatasetWriter.open(dataset, instrument.state())
    if writer.n_frames == 0:
        writer.append([survey])
    scalarizer = scalarizer_for(config.property, config.lattice)
    rowcol = candidate_grid(survey.image.shape, config.stride, config.margin)
    campaign = _campaign(config, survey, rowcol)
    log = MeasurementLog(
        dataset,
        spectrometer.energy,
        {
            "started": dt.datetime.now(dt.UTC).isoformat(),
            "scopeflow_version": scopeflow.__version__,
            "config": asdict(config),
            "survey_frame": config.frame,
            "n_candidates": len(rowcol),
            "channel": spectrometer.state(),
            "scalarizer": scalarizer.describe(),
            "surrogate": "hypotheses" if config.hypotheses else config.model,
            "acquisition": campaign.scorer.name,
        },
    )
    earlier = log.history()
    if earlier.candidates and max(earlier.candidates) >= len(rowcol):
        raise InputError(f"{dataset} holds measurements on another candidate grid: use a new dataset")
    campaign.restore(earlier.candidates, earlier.values, skipped=earlier.skipped, step=earlier.step)
    noise_rng = np.random.default_rng([config.seed, 0x401])
    if earlier.spectra is not None and len(earlier.spectra):
        campaign.noise_sd.extend(
            counting_sd(scalarizer, spectrometer.energy, earlier.spectra, noise_rng).tolist()
        )
    result = ExploreResult(str(dataset), len(earlier.candidates), float("-inf"), [], False, earlier.step, 0.0)
    result.resumed_from = len(earlier.candidates)
    _update_best(result, campaign, rowcol, config)
    while len(campaign.measured) < config.budget and not result.target_found:
        if config.budget_seconds is not None and result.instrument_seconds >= config.budget_seconds:
            break
        k = min(config.batch, config.budget - len(campaign.measured))
        proposal = campaign.propose(k)
        result.decision_seconds.append(proposal.decision_seconds)
        answer = Answer("auto")
        if approve:
            context = {
                "leading": campaign.leading() if isinstance(campaign, HypothesisCampaign) else None,
                "rowcol": rowcol[campaign.measured],
                "values": np.asarray(campaign.values),
                "survey": survey.image,
            }
            answer = approve(proposal, rowcol[proposal.indices], context)
        result.approvals[answer.verdict] = result.approvals.get(answer.verdict, 0) + 1
        indices = list(proposal.indices)
        mean, std = proposal.predicted_mean, proposal.predicted_std
        if answer.verdict in ("rejected", "replaced"):
            campaign.skip(proposal.indices)
            log.decide(step=proposal.step, verdict=answer.verdict, note=answer.note, skipped=proposal.indices)
            if answer.verdict == "rejected":
                continue
            indices = _snap(answer.points, rowcol, set(campaign.measured) | set(campaign.skipped))
            mean, std = [float("nan")] * len(indices), [float("nan")] * len(indices)
            if not indices:
                continue
        elif answer.note:
            log.decide(step=proposal.step, verdict=answer.verdict, note=answer.note)
        measurement = spectrometer.measure(rowcol[indices])
        values = scalarizer(measurement.energy, measurement.counts)
        # Counting noise of each value (Poisson bootstrap): the surrogates fix their noise to it.
        noise = counting_sd(scalarizer, measurement.energy, measurement.counts, noise_rng)
        campaign.record(indices, values, noise)
        log.append(
            rowcol=measurement.rowcol,
            candidate=indices,
            spectra=measurement.counts,
            values=values,
            step=proposal.step,
            acquisition=proposal.how,
            approval=answer.verdict,
            predicted_mean=mean,
            predicted_std=std,
            seconds=measurement.seconds,
            dose=measurement.dose,
        )
        result.steps = proposal.step
        result.instrument_seconds += float(measurement.seconds.sum())
        _update_best(result, campaign, rowcol, config)
        if on_step:
            state = {
                "percent": 100.0 * result.n_measured / config.budget,
                "text": f"{result.n_measured}/{config.budget} measured, best {result.best_value:.4g} "
                f"at (row, col) {result.best_rowcol}",
                "rowcol": rowcol[campaign.measured],
                "values": np.asarray(campaign.values),
                "survey": survey.image,
            }
            if isinstance(campaign, HypothesisCampaign):
                state["weights"] = dict(zip(campaign.names, campaign.weights().tolist(), strict=True))
            on_step(state)
    if isinstance(campaign, HypothesisCampaign) and len(campaign.measured) >= campaign.n_initial:
        report: HypothesisReport = campaign.finish()
        result.hypotheses = report.describe()
    return result


def _campaign(config: ExploreConfig, survey: Frame, rowcol: np.ndarray) -> Campaign | HypothesisCampaign:
    scorer = make_scorer(config.acquisition, beta=config.beta)
    if config.hypotheses:
        hyps = load_hypotheses(config.hypotheses, nominal=nominal_value(config.property, config.lattice))
        # Positions in Å from the survey's centre: the frame the hypotheses' laws are written in.
        centre = (np.asarray(survey.image.shape, dtype=np.float64) - 1) / 2
        positions = (rowcol[:, ::-1] - centre[::-1]) * survey.pixel_size
        return HypothesisCampaign(
            positions,
            hyps,
            scorer,
            policy=config.policy,  # type: ignore[arg-type]
            temperature=config.temperature,
            epsilon=config.epsilon,
            n_initial=config.n_initial,
            seed=config.seed,
        )
    inputs = standardise(extract_patches(survey.image, rowcol, config.patch))
    surrogate = (
        GPSurrogate.dkl(inputs, seed=config.seed) if config.model == "dkl" else GPSurrogate.plain(inputs)
    )
    return Campaign(surrogate, scorer, n_initial=config.n_initial, seed=config.seed)


def _update_best(
    result: ExploreResult, campaign: Campaign | HypothesisCampaign, rowcol: np.ndarray, config: ExploreConfig
) -> None:
    result.n_measured = len(campaign.measured)
    if not campaign.values:
        return
    best = int(np.argmax(campaign.values))
    result.best_value = campaign.values[best]
    result.best_rowcol = [float(v) for v in rowcol[campaign.measured[best]]]
    if config.target is not None and result.best_value >= config.target:
        result.target_found = True


def _snap(points: list[list[float]], rowcol: np.ndarray, taken: set[int]) -> list[int]:
    """Candidates nearest to (row, col px) points, each once, none already measured or skipped."""
    out: list[int] = []
    for p in points:
        if len(p) != 2:
            raise InputError(f"a replacement point is (row, col) px, got {p}")
        i = int(np.argmin(((rowcol - np.asarray(p, dtype=np.float64)) ** 2).sum(axis=1)))
        if i not in taken and i not in out:
            out.append(i)
    return out


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
