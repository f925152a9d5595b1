"""The explore loop: plain, resumed, killed, and as a Prefect flow whose gate a person answers."""

from __future__ import annotations

import contextvars
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.explore import explore, explore_flow
from scopeflow.errors import InputError
from tasks.active.campaign_loop import ExploreConfig
from tasks.active.measurement_log import measurement_attrs, open_measurements

# A small grid (12 × 12 candidates) keeps each decision in milliseconds.
SMALL = {"stride": 16, "margin": 40, "n_initial": 3, "batch": 2}


def test_plain_explore_records_every_measurement_with_provenance(tmp_path: Path) -> None:
    cfg = ExploreConfig(budget=8, **SMALL)
    result = explore(tmp_path / "run", cfg)
    assert result.n_measured == 8
    ds = open_measurements(tmp_path / "run")
    assert ds.sizes["measurement"] == 8
    assert ds["spectrum"].shape == (8, ds.sizes["energy"])
    assert len(set(ds["candidate"].values.tolist())) == 8
    np.testing.assert_allclose(ds["value"].values.max(), result.best_value)
    # DKL (the default) says which of its two models chose: the deep one or its plain fallback.
    chosen = set(ds["acquisition"].values.tolist())
    assert "initial" in chosen
    assert chosen - {"initial"} and chosen <= {"initial", "logei:plain", "logei:deep"}
    run = measurement_attrs(tmp_path / "run")["runs"][0]
    assert run["config"]["budget"] == 8
    assert run["scalarizer"]["name"] == "band_intensity"
    assert run["channel"]["kind"] == "twin-eels"


def test_explore_stops_at_the_target(tmp_path: Path) -> None:
    result = explore(tmp_path / "run", ExploreConfig(budget=20, target=-1e9, **SMALL))
    assert result.target_found
    assert result.n_measured == SMALL["batch"]


def test_config_errors() -> None:
    with pytest.raises(InputError, match="property"):
        ExploreConfig(property="colour")
    with pytest.raises(InputError, match="lattice"):
        ExploreConfig(lattice="ice")
    with pytest.raises(InputError, match="qlogei"):
        ExploreConfig(scorer="best-guess")
    with pytest.raises(InputError, match="policy"):
        ExploreConfig(policy="vote")


def test_a_new_run_takes_the_campaign_up_without_repeating_a_point(tmp_path: Path) -> None:
    first = explore(tmp_path / "run", ExploreConfig(budget=6, **SMALL))
    before = open_measurements(tmp_path / "run")["candidate"].values.tolist()
    second = explore(tmp_path / "run", ExploreConfig(budget=10, **SMALL))
    assert (first.n_measured, second.resumed_from, second.n_measured) == (6, 6, 10)
    ds = open_measurements(tmp_path / "run")
    cand = ds["candidate"].values.tolist()
    assert cand[:6] == before
    assert len(set(cand)) == 10
    assert ds["run"].values.tolist() == [0] * 6 + [1] * 4
    assert ds["step"].values[6] > ds["step"].values[5]  # steps go on, they do not restart
    assert len(measurement_attrs(tmp_path / "run")["runs"]) == 2


def test_a_killed_campaign_loses_no_recorded_measurement(tmp_path: Path) -> None:
    path = tmp_path / "run"
    code = (
        "from flows.explore import explore\nfrom tasks.active.campaign_loop import ExploreConfig\n"
        f"explore({str(path)!r}, ExploreConfig(budget=100000, stride=16, margin=40, n_initial=3, batch=1))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        seen = 0
        while seen < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                seen = open_measurements(path).sizes["measurement"]
            except (FileNotFoundError, KeyError, ValueError):
                seen = 0
        assert seen >= 3, "the campaign recorded nothing in 120 s"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    kept = open_measurements(path)
    n = kept.sizes["measurement"]
    assert n >= seen
    before = kept["candidate"].values.tolist()
    resumed = explore(path, ExploreConfig(budget=n + 3, stride=16, margin=40, n_initial=3, batch=1))
    assert resumed.resumed_from == n
    after = open_measurements(path)["candidate"].values.tolist()
    assert after[:n] == before
    assert len(after) == n + 3
    assert len(set(after)) == n + 3


def test_cli_explains_a_bad_hypotheses_file_and_exits_2(tmp_path: Path) -> None:
    from flows.cli import app

    bad = tmp_path / "laws.py"
    bad.write_text("HYPOTHESES = 3\n")
    out = CliRunner().invoke(
        app, ["explore", "--dataset", str(tmp_path / "run"), "--hypotheses", str(bad), "--no-prefect"]
    )
    assert out.exit_code == 2
    assert "Hypothesis" in out.output
    assert not (tmp_path / "run").exists()


def _answer_pauses(answers: list[dict], done: threading.Event) -> list[str]:
    """Answer each pause of the one running explore flow with the next of ``answers``,
    through the API (what the UI's form submits); returns the pause keys seen."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    keys: list[str] = []
    paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    with get_client(sync_client=True) as client:
        while answers and not done.is_set():
            runs = client.read_flow_runs(flow_run_filter=paused)
            runs = [r for r in runs if r.state and r.state.state_details.pause_key not in keys]
            if not runs:
                time.sleep(0.2)
                continue
            run = runs[0]
            assert run.state is not None
            keys.append(str(run.state.state_details.pause_key))
            resume_flow_run(run.id, run_input=answers.pop(0))
    return keys


def test_the_gate_acts_on_approve_reject_and_replace(tmp_path: Path, prefect_api: None) -> None:
    from prefect.client.orchestration import get_client

    cfg = ExploreConfig(
        budget=5, stride=16, margin=40, n_initial=3, batch=1, property="plasmon", scorer="maxvar",
        hypotheses="tasks.active.hypotheses.strain",
    )  # fmt: skip
    answers = [
        {"decision": "approve", "note": "fine"},
        {"decision": "reject", "note": "on the hole's rim: beam damage"},
        {"decision": "replace", "points": [[40.0, 40.0]], "note": "the corner first"},
        {"decision": "approve"},
        {"decision": "approve"},
        {"decision": "approve"},
    ]
    state_box: dict = {}
    done = threading.Event()

    def run() -> None:
        state_box["state"] = explore_flow(
            str(tmp_path / "run"), asdict(cfg), gate=True, gate_timeout=20, return_state=True
        )
        done.set()

    thread = threading.Thread(target=contextvars.copy_context().run, args=(run,))
    thread.start()
    keys = _answer_pauses(answers, done)
    thread.join(timeout=300)
    assert not thread.is_alive()
    state = state_box["state"]
    assert state.is_completed(), state
    result = state.result()
    assert keys[:3] == ["batch-1", "batch-2", "batch-3"]
    assert result["approvals"] == {"approved": 4, "rejected": 1, "replaced": 1}
    ds = open_measurements(tmp_path / "run")
    assert ds.sizes["measurement"] == 5
    # The replaced batch measured the candidate nearest to (40, 40) px: the grid's first.
    replaced = ds["approval"].values == "replaced"
    assert ds["row"].values[replaced].tolist() == [40.0]
    assert ds["col"].values[replaced].tolist() == [40.0]
    attrs = measurement_attrs(tmp_path / "run")
    verdicts = [(d["verdict"], d["note"]) for d in attrs["decisions"]]
    assert ("rejected", "on the hole's rim: beam damage") in verdicts
    assert ("replaced", "the corner first") in verdicts
    rejected = next(d["skipped"] for d in attrs["decisions"] if d["verdict"] == "rejected")
    assert not set(rejected) & set(ds["candidate"].values.tolist())
    assert result["hypotheses"]["best"] in ("gradient", "inclusion", "wall")
    with get_client(sync_client=True) as client:
        artifacts = {a.key: a for a in client.read_artifacts()}
    assert artifacts["explore-progress"].data == 100.0
    assert artifacts["explore-proposal"].type == "image"
    assert artifacts["explore-map"].type == "image"
    assert artifacts["explore-hypotheses"].type == "table"
    assert artifacts["explore-hypotheses-final"].type == "table"


def test_gated_flow_continues_after_its_timeout(tmp_path: Path, prefect_api: None) -> None:
    cfg = ExploreConfig(budget=3, **SMALL)  # batches of 2 and 1: two gates
    state = explore_flow(str(tmp_path / "run"), asdict(cfg), gate=True, gate_timeout=2, return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result["n_measured"] == 3
    assert result["approvals"] == {"timeout": 2}
    assert set(open_measurements(tmp_path / "run")["approval"].values.tolist()) == {"timeout"}
