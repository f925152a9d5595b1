"""Fixtures for the active-learning tests: a real Prefect API for the flow tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # The test machine's 2 cores are shared with other jobs: an OpenMP team of 2 then spins
    # waiting for a busy core (measured: 10x slower fits), while these tiny models gain nothing.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A Prefect server in a subprocess (the real API), analytics and heartbeats off."""
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ.pop("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", None)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield
