"""Fixtures for the active-learning tests (the real Prefect API is the session one in tests/conftest.py)."""

from __future__ import annotations

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
