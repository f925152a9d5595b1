"""Test-wide settings and the shared real Prefect API."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

# Before anything imports Prefect: a throwaway home, no telemetry, no heartbeats.
_home = tempfile.mkdtemp(prefix="scopeflow-tests-")
os.environ.setdefault("SCOPEFLOW_HOME", _home)
os.environ["PREFECT_HOME"] = os.path.join(_home, "prefect")
os.makedirs(os.environ["PREFECT_HOME"], exist_ok=True)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.pop("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", None)
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A real Prefect API server (subprocess) for the whole session; flows report to it."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def ensemble(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The shipped production ensemble (``storage/default_models``) on the CPU, loaded once for
    the session: tests read it and never change it. An empty registry falls back to it."""
    import torch

    from storage.models import ModelRegistry
    from tasks.inference.registry import load_ensemble

    registry = ModelRegistry(tmp_path_factory.mktemp("empty-registry"))
    return load_ensemble("production", registry, device=torch.device("cpu"))
