"""drift event → automation → retrain deployment, against a real Prefect server (the harness)."""

import time
from pathlib import Path

import yaml

from flows.events import DRIFT_EVENT, emit_drift
from flows.retrain import drift_trigger, parse_members, retrain_flow
from tests.helpers.prefect_api import flow_runs


def test_drift_event_starts_a_retrain_run(prefect_api):
    deployment_id = retrain_flow.to_deployment("retrain-on-drift", triggers=[drift_trigger()]).apply()
    assert flow_runs(deployment_id=deployment_id) == []
    emit_drift(
        "twin",
        "/data/run.zarr",
        120,
        151,
        [0, 2, 3],
        {"mmd": 3.2},
        "v0001-abc",
        {"changed": "dose", "dose_ratio": 0.1},
    )
    deadline = time.monotonic() + 90
    runs = []
    while not runs and time.monotonic() < deadline:
        time.sleep(1.0)
        runs = flow_runs(deployment_id=deployment_id)
    assert len(runs) == 1, "the automation did not start the retrain deployment"
    params = runs[0].parameters
    assert params["dataset"] == "/data/run.zarr"
    assert int(params["frame_start"]) == 120
    assert int(params["frame_end"]) == 151
    assert parse_members(params["members"]) == [0, 2, 3]


def test_prefect_yaml_declares_the_same_trigger():
    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "deployments" / "prefect.yaml").read_text())
    (retrain,) = [d for d in spec["deployments"] if d["name"] == "retrain"]
    (trigger,) = retrain["triggers"]
    ours = drift_trigger()
    assert trigger["expect"] == [DRIFT_EVENT]
    assert trigger["match"] == ours.model_dump(mode="json")["match"]
    assert trigger["parameters"] == ours.parameters
