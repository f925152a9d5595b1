"""deployments/prefect.yaml applies on a fresh Prefect server with its pools, schedules and trigger."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from flows.deploy import ROOT, apply_deployments, load_spec, pool_names
from flows.events import DRIFT_EVENT
from scopeflow.errors import NotFoundError


async def _read_back(ids: dict[str, Any]) -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        deployments = {name: await client.read_deployment(i) for name, i in ids.items()}
        pools = {p: await client.read_work_pool(p) for p in pool_names(load_spec())}
        automations = await client.read_automations()
    return {"deployments": deployments, "pools": pools, "automations": automations}


def test_deployments_apply_with_schedules_and_trigger(prefect_api: None) -> None:
    ids = asyncio.run(apply_deployments())
    assert set(ids) == {d["name"] for d in load_spec()["deployments"]}
    assert asyncio.run(apply_deployments()) == ids  # applying again updates, never duplicates
    got = asyncio.run(_read_back(ids))
    assert {name: pool.type for name, pool in got["pools"].items()} == {
        "scopeflow-edge": "process",
        "scopeflow-cloud": "process",
    }
    deps = got["deployments"]
    assert deps["edge"].work_pool_name == "scopeflow-edge"
    assert deps["retrain"].work_pool_name == "scopeflow-cloud"
    assert deps["reprocess-nightly"].work_pool_name == "scopeflow-cloud"
    # Workers run the entrypoints from the repository, wherever they were started.
    assert deps["edge"].pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
    ]
    # Entrypoints stay relative to the repository (the pull step's directory), whatever this
    # process's working directory, and the flows' parameter schemas go with them.
    assert {name: d.entrypoint for name, d in deps.items()} == {
        d["name"]: d["entrypoint"] for d in load_spec()["deployments"]
    }
    assert "dataset" in deps["edge"].parameter_openapi_schema["properties"]
    crons = {name: [(s.schedule.cron, s.schedule.timezone) for s in d.schedules] for name, d in deps.items()}
    assert crons["sync"] == [("*/30 * * * *", "UTC")]
    assert crons["reprocess-nightly"] == [("0 2 * * *", "UTC")]
    assert crons["edge"] == crons["retrain"] == []
    owned = [
        a
        for a in got["automations"]
        if any(getattr(action, "deployment_id", None) == ids["retrain"] for action in a.actions)
    ]
    assert len(owned) == 1, "applying twice must replace, not add, the retrain trigger"
    trigger = owned[0].trigger
    assert trigger.expect == {DRIFT_EVENT}
    assert trigger.match.model_dump(mode="json") == {"prefect.resource.id": "scopeflow.instrument.*"}
    assert owned[0].actions[0].parameters["dataset"] == "{{ event.payload.dataset }}"


def test_the_deploy_command_prints_each_deployment_and_its_id(prefect_api: None) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    out = CliRunner().invoke(app, ["deploy"])
    assert out.exit_code == 0, out.output
    rows = [line.split("\t") for line in out.stdout.splitlines() if "\t" in line]
    assert [name for name, _ in rows] == [d["name"] for d in load_spec()["deployments"]]


def test_a_missing_deployments_file_is_named(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    out = CliRunner().invoke(app, ["deploy", "--spec", str(tmp_path / "nope.yaml")])
    assert isinstance(out.exception, NotFoundError)
    assert "nope.yaml" in str(out.exception)


def test_up_with_a_missing_deployments_file_stops_before_any_server(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**__import__("os").environ, "SCOPEFLOW_HOME": str(tmp_path / "home")}
    out = subprocess.run(
        [sys.executable, "-m", "flows", "up", "--spec", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 2
    assert "nope.yaml" in out.stderr + out.stdout
    assert not (tmp_path / "home" / "ops" / "state.json").exists()  # nothing was started
