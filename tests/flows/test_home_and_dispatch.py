"""One home per user wherever a command runs; `edge` retrains only when asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flows.retrain import dispatch_retraining
from storage.models import ModelRegistry
from tasks.drift.edge_loop import Escalation

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_home_is_the_users_data_directory_not_the_current_one(tmp_path: Path) -> None:
    user = tmp_path / "user"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCOPEFLOW_", "PREFECT_", "XDG_"))}
    env.update(HOME=str(user), PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "flows", "models", "list"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    expected = user / ".local" / "share" / "scopeflow"
    assert f"scopeflow home: {expected}" in result.stderr  # every command says which home
    assert "v0001-" in result.stdout  # the shipped versions, found from anywhere
    assert not (elsewhere / ".scopeflow").exists()
    override = subprocess.run(
        [sys.executable, "-m", "flows", "models", "list"],
        env={**env, "SCOPEFLOW_HOME": str(tmp_path / "mine")},
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"scopeflow home: {tmp_path / 'mine'} (from $SCOPEFLOW_HOME)" in override.stderr


def test_without_retrain_drift_is_reported_not_retrained(prefect_api: None, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    before = (registry.versions(), registry.alias("production"))
    escalation = Escalation(str(tmp_path / "run.zarr"), 64, 79, (0, 1), {"kernel": 2.0}, before[0][-1])
    out = dispatch_retraining(escalation, "twin", "report", str(registry.root))
    assert out["promoted"] is False
    assert "--retrain" in out["reason"]
    assert (registry.versions(), registry.alias("production")) == before
