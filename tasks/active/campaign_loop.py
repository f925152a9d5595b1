"""The exploration loop: a survey image, then a campaign chooses where to measure spectra next.

``run_campaign`` is plain Python (no Prefect): survey, candidates, then propose → (ask) →
measure → record until the budget is spent or the target found. Every batch is one commit in
the dataset's measurement log, so a run on a dataset that already holds measurements takes the
campaign up where it stopped: earlier points are never measured again. ``flows/explore.py``
wraps it with the twin as instrument, Prefect artifacts and a person's gate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

import scopeflow
from scopeflow.errors import InputError
from scopeflow.frame import Frame
from scopeflow.settings import limit_threads
from storage.datasets import DatasetWriter
from tasks.acquisition.instrument import Instrument, Spectrometer

from .campaign import Campaign, Proposal
from .hypotheses import load_hypotheses
from .hypothesis_learning import HypothesisCampaign
from .measurement_log import MeasurementLog
from .patches import candidate_grid, extract_patches, standardise
from .scalarizers import Scalarizer, counting_sd
from .scoring import make_scorer
from .surrogate import GPSurrogate

PROPERTIES = ("dopant", "defect", "plasmon")
LATTICES = ("graphene", "mos2", "perovskite")
Verdict = Literal["auto", "approved", "rejected", "replaced", "timeout"]


@dataclass(frozen=True)
class ExploreConfig:
    """Settings of one exploration (the twin's sample, the candidate grid, the model, the budget).

    ``scorer`` names the BoTorch acquisition function that ranks candidates (``SCORERS``);
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
    scorer: str = "logei"
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
        make_scorer(self.scorer, beta=self.beta)  # a clear error for an unknown name
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


AnyCampaign = Campaign | HypothesisCampaign
Approve = Callable[[Proposal, np.ndarray, dict[str, Any]], Answer]


def make_campaign(
    config: ExploreConfig, survey: Frame, rowcol: np.ndarray, nominal: float = 0.0
) -> AnyCampaign:
    """The campaign ``config`` asks for over candidates ``rowcol`` (px) of ``survey``: a GP
    (DKL or plain) on image patches, or hypotheses whose priors centre on ``nominal``."""
    scorer = make_scorer(config.scorer, beta=config.beta)
    if config.hypotheses:
        hyps = load_hypotheses(config.hypotheses, nominal=nominal)
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


class _Run:
    """One run's state: the survey, the candidates, the campaign, its log and the result so far."""

    def __init__(
        self,
        dataset: str | Path,
        config: ExploreConfig,
        sources: tuple[Instrument, Spectrometer],
        scalarizer: Scalarizer,
        nominal: float,
    ) -> None:
        self.config = config
        self.scalarizer = scalarizer
        instrument, self.spectrometer = sources
        self.survey = instrument.acquire(config.frame)
        writer = DatasetWriter.open(dataset, instrument.state())
        if writer.n_frames == 0:
            writer.append([self.survey])
        self.rowcol = candidate_grid(self.survey.image.shape, config.stride, config.margin)
        self.campaign = make_campaign(config, self.survey, self.rowcol, nominal)
        self.log = MeasurementLog(dataset, self.spectrometer.energy, self._provenance())
        self.noise_rng = np.random.default_rng([config.seed, 0x401])
        self.result = ExploreResult(str(dataset), 0, float("-inf"), [], False, 0, 0.0)
        self._resume(dataset)

    def _provenance(self) -> dict[str, Any]:
        config = self.config
        return {
            "started": dt.datetime.now(dt.UTC).isoformat(),
            "scopeflow_version": scopeflow.__version__,
            "config": asdict(config),
            "survey_frame": config.frame,
            "n_candidates": len(self.rowcol),
            "channel": self.spectrometer.state(),
            "scalarizer": self.scalarizer.describe(),
            "surrogate": "hypotheses" if config.hypotheses else config.model,
            "acquisition": self.campaign.scorer.name,  # the log's schema-1 key for the scorer
        }

    def _resume(self, dataset: str | Path) -> None:
        """Take up what earlier runs measured and skipped, with their counting noise."""
        earlier = self.log.history()
        if earlier.candidates and max(earlier.candidates) >= len(self.rowcol):
            raise InputError(f"{dataset} holds measurements on another candidate grid: use a new dataset")
        self.campaign.restore(earlier.candidates, earlier.values, skipped=earlier.skipped, step=earlier.step)
        if earlier.spectra is not None and len(earlier.spectra):
            sd = counting_sd(self.scalarizer, self.spectrometer.energy, earlier.spectra, self.noise_rng)
            self.campaign.noise_sd.extend(sd.tolist())
        self.result.steps = earlier.step
        self.result.resumed_from = len(earlier.candidates)
        self._update_best()

    def wants_more(self) -> bool:
        """Budget left (measurements and instrument time) and the target not yet found."""
        config, result = self.config, self.result
        if len(self.campaign.measured) >= config.budget or result.target_found:
            return False
        return config.budget_seconds is None or result.instrument_seconds < config.budget_seconds

    def propose(self) -> Proposal:
        """The next batch (never past the budget)."""
        k = min(self.config.batch, self.config.budget - len(self.campaign.measured))
        proposal = self.campaign.propose(k)
        self.result.decision_seconds.append(proposal.decision_seconds)
        return proposal

    def context(self) -> dict[str, Any]:
        """What a person deciding about a batch sees: the leading hypothesis, the map so far."""
        campaign = self.campaign
        return {
            "leading": campaign.leading() if isinstance(campaign, HypothesisCampaign) else None,
            "rowcol": self.rowcol[campaign.measured],
            "values": np.asarray(campaign.values),
            "survey": self.survey.image,
        }

    def settle(self, proposal: Proposal, answer: Answer) -> tuple[list[int], list[float], list[float]]:
        """Act on ``answer``: the candidates to measure with their predicted mean and sd (none
        when the batch was rejected, or replaced by points all taken already)."""
        self.result.approvals[answer.verdict] = self.result.approvals.get(answer.verdict, 0) + 1
        campaign, log = self.campaign, self.log
        if answer.verdict not in ("rejected", "replaced"):
            if answer.note:
                log.decide(step=proposal.step, verdict=answer.verdict, note=answer.note)
            return list(proposal.indices), proposal.predicted_mean, proposal.predicted_std
        campaign.skip(proposal.indices)
        log.decide(step=proposal.step, verdict=answer.verdict, note=answer.note, skipped=proposal.indices)
        if answer.verdict == "rejected":
            return [], [], []
        indices = snap(answer.points, self.rowcol, set(campaign.measured) | set(campaign.skipped))
        nan = [float("nan")] * len(indices)
        return indices, nan, list(nan)

    def measure(
        self, proposal: Proposal, answer: Answer, indices: list[int], mean: list[float], std: list[float]
    ) -> None:
        """Measure ``indices``, record the values with their counting noise, commit the batch."""
        measurement = self.spectrometer.measure(self.rowcol[indices])
        values = self.scalarizer(measurement.energy, measurement.counts)
        # Counting noise of each value (Poisson bootstrap): the surrogates fix their noise to it.
        noise = counting_sd(self.scalarizer, measurement.energy, measurement.counts, self.noise_rng)
        self.campaign.record(indices, values, noise)
        self.log.append(
            rowcol=measurement.rowcol,
            candidate=indices,
            spectra=measurement.counts,
            values=values,
            step=proposal.step,
            scorer=proposal.how,
            approval=answer.verdict,
            predicted_mean=mean,
            predicted_std=std,
            seconds=measurement.seconds,
            dose=measurement.dose,
        )
        self.result.steps = proposal.step
        self.result.instrument_seconds += float(measurement.seconds.sum())
        self._update_best()

    def progress(self) -> dict[str, Any]:
        """The run so far for ``on_step``: percent, a line of text, the map, hypotheses' weights."""
        result, campaign = self.result, self.campaign
        state = {
            "percent": 100.0 * result.n_measured / self.config.budget,
            "text": f"{result.n_measured}/{self.config.budget} measured, best {result.best_value:.4g} "
            f"at (row, col) {result.best_rowcol}",
            "rowcol": self.rowcol[campaign.measured],
            "values": np.asarray(campaign.values),
            "survey": self.survey.image,
        }
        if isinstance(campaign, HypothesisCampaign):
            state["weights"] = dict(zip(campaign.names, campaign.weights().tolist(), strict=True))
        return state

    def finish(self) -> ExploreResult:
        """The result, with the hypotheses' final report when they had enough to fit."""
        campaign = self.campaign
        if isinstance(campaign, HypothesisCampaign) and len(campaign.measured) >= campaign.n_initial:
            self.result.hypotheses = campaign.finish().describe()
        return self.result

    def _update_best(self) -> None:
        result, campaign = self.result, self.campaign
        result.n_measured = len(campaign.measured)
        if not campaign.values:
            return
        best = int(np.argmax(campaign.values))
        result.best_value = campaign.values[best]
        result.best_rowcol = [float(v) for v in self.rowcol[campaign.measured[best]]]
        if self.config.target is not None and result.best_value >= self.config.target:
            result.target_found = True


def run_campaign(
    dataset: str | Path,
    config: ExploreConfig,
    *,
    sources: tuple[Instrument, Spectrometer],
    scalarizer: Scalarizer,
    nominal: float = 0.0,
    approve: Approve | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> ExploreResult:
    """Survey, then propose/measure/record until the budget is spent or the target found.

    ``sources`` are the instrument that takes the survey and the spectrometer; ``scalarizer``
    turns a spectrum into the value maximised; ``nominal`` is that value on a pristine sample
    (what hypotheses' priors centre on). ``approve(proposal, rowcol, context)`` may reject a
    batch (its points are never proposed again) or replace it by other points; ``context``
    holds the leading hypothesis (or None), the points measured so far (``rowcol``,
    ``values``) and the ``survey`` image. ``on_step(state)`` hears about every batch measured
    (progress, the map, the hypotheses' weights).
    """
    limit_threads(config.threads)
    run = _Run(dataset, config, sources, scalarizer, nominal)
    while run.wants_more():
        proposal = run.propose()
        answer = approve(proposal, run.rowcol[proposal.indices], run.context()) if approve else Answer("auto")
        indices, mean, std = run.settle(proposal, answer)
        if not indices:
            continue
        run.measure(proposal, answer, indices, mean, std)
        if on_step:
            on_step(run.progress())
    return run.finish()


def snap(points: list[list[float]], rowcol: np.ndarray, taken: set[int]) -> list[int]:
    """Candidates nearest to (row, col px) points, each once, none already measured or skipped."""
    out: list[int] = []
    for p in points:
        if len(p) != 2:
            raise InputError(f"a replacement point is (row, col) px, got {p}")
        i = int(np.argmin(((rowcol - np.asarray(p, dtype=np.float64)) ** 2).sum(axis=1)))
        if i not in taken and i not in out:
            out.append(i)
    return out
