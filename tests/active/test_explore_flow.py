"""The explore loop, plain and as a Prefect flow whose human gate times out and carries on."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from flows.explore import ExploreConfig, explore, explore_flow
from scopeflow.errors import InputError
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
    assert set(ds["acquisition"].values.tolist()) == {"initial", "ei"}
    run = measurement_attrs(tmp_path / "run")["runs"][0]
    assert run["config"]["budget"] == 8
    assert run["scalarizer"]["name"] == "band_intensity"


def test_explore_stops_at_the_target(tmp_path: Path) -> None:
    result = explore(tmp_path / "run", ExploreConfig(budget=20, target=-1e9, **SMALL))
    assert result.target_found
    assert result.n_measured == SMALL["batch"]


def test_config_errors() -> None:
    with pytest.raises(InputError, match="property"):
        ExploreConfig(property="colour")
    with pytest.raises(InputError, match="lattice"):
        ExploreConfig(lattice="ice")


def test_gated_flow_continues_after_its_timeout(tmp_path: Path, prefect_api: None) -> None:
    from prefect.client.orchestration import get_client

    cfg = ExploreConfig(budget=5, **SMALL)  # batches of 2, 2 and 1: three gates
    state = explore_flow(str(tmp_path / "run"), asdict(cfg), gate=True, gate_timeout=2, return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result["n_measured"] == 5
    assert result["approvals"] == {"timeout": 3}
    ds = open_measurements(tmp_path / "run")
    assert set(ds["approval"].values.tolist()) == {"timeout"}
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        assert run.state is not None
        assert run.state.is_completed()
        artifacts = client.read_artifacts()
    progress = [a for a in artifacts if a.key == "explore-progress"]
    assert progress
    assert progress[0].data == 100.0
    assert any(a.key == "explore-map" and a.type == "image" for a in artifacts)
