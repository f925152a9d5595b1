"""The exploration loop on its own: no Prefect, any instrument and spectrometer, any scalarizer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from tasks.acquisition.twin import DigitalTwin
from tasks.acquisition.twin.spectra import PEAKS, SpectrumChannel
from tasks.active import BandIntensity, PeakPosition, Proposal
from tasks.active.campaign_loop import Answer, ExploreConfig, run_campaign, snap
from tasks.active.measurement_log import measurement_attrs, open_measurements

SMALL = {"stride": 16, "margin": 40, "n_initial": 3, "batch": 1, "model": "gp"}


def _sources(config: ExploreConfig) -> tuple[DigitalTwin, SpectrumChannel]:
    twin = DigitalTwin(config.seed, name="twin-loop")
    return twin, SpectrumChannel(twin, config.frame, dwell=config.dwell)  # type: ignore[arg-type]


def test_the_loop_runs_without_prefect(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from tasks.active.campaign_loop import run_campaign\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'prefect'], 'Prefect was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rejected_points_are_never_measured_and_a_replacement_snaps_to_the_grid(tmp_path: Path) -> None:
    config = ExploreConfig(budget=5, **SMALL)
    p = PEAKS[config.lattice]
    scalarizer = PeakPosition(p.plasmon_ev - 2 * p.plasmon_fwhm, p.plasmon_ev + 2 * p.plasmon_fwhm)
    rejected: list[int] = []
    answers = iter(["approved", "rejected", "replaced"])

    def approve(proposal: Proposal, rowcol: np.ndarray, context: dict) -> Answer:
        verdict = next(answers, "approved")
        if verdict == "rejected":
            rejected.extend(proposal.indices)
            return Answer("rejected", note="beam damage")
        if verdict == "replaced":
            return Answer("replaced", points=[[40.0, 40.0]])
        return Answer("approved")

    steps: list[dict] = []
    result = run_campaign(
        tmp_path / "run",
        config,
        sources=_sources(config),
        scalarizer=scalarizer,
        approve=approve,
        on_step=steps.append,
    )
    assert result.n_measured == 5 and len(steps) == 5
    assert result.approvals == {"approved": 4, "rejected": 1, "replaced": 1}
    ds = open_measurements(tmp_path / "run")
    measured = ds["candidate"].values.tolist()
    assert rejected and not set(rejected) & set(measured)
    replaced = ds["approval"].values == "replaced"
    assert ds["row"].values[replaced].tolist() == [40.0] and ds["col"].values[replaced].tolist() == [40.0]
    assert np.isnan(ds["predicted_mean"].values[replaced]).all()
    decisions = measurement_attrs(tmp_path / "run")["decisions"]
    assert [d["verdict"] for d in decisions] == ["rejected", "replaced"]
    assert steps[-1]["percent"] == 100.0


def test_the_instrument_time_budget_stops_the_run(tmp_path: Path) -> None:
    config = ExploreConfig(budget=50, budget_seconds=0.1, dwell=0.05, **SMALL)
    p = PEAKS[config.lattice]
    result = run_campaign(
        tmp_path / "run",
        config,
        sources=_sources(config),
        scalarizer=BandIntensity(p.dopant_ev - 0.8, p.dopant_ev + 0.8, flank=1.0),
    )
    assert result.instrument_seconds >= 0.1
    assert result.n_measured < 50


def test_snap_takes_each_free_candidate_once() -> None:
    rowcol = np.array([[0.0, 0.0], [0.0, 10.0], [10.0, 0.0]])
    assert snap([[1.0, 1.0], [0.5, 0.5], [9.0, 1.0], [1.0, 9.0]], rowcol, taken={1}) == [0, 2]
