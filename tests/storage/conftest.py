"""Fixtures: a real store server (uvicorn on loopback) per database, SQLite and PostgreSQL.

Every test that uses ``store`` (or ``admin``/``alice``/``bob``) runs against both. The
PostgreSQL server is a throwaway cluster on loopback that ``scripts/postgres-test.sh`` starts
(``make test`` installs PostgreSQL first when it is missing); where it cannot be had, those
tests skip and say why.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.federation.catalog.context import Limits
from storage.federation.client import StoreClient
from storage.federation.embedded import RunningStore, serve_in_thread

#: Small limits so the size checks can be exercised quickly, in bytes.
TEST_LIMITS = Limits(max_metadata_bytes=16 * 1024, max_body_bytes=256 * 1024, max_file_bytes=512 * 1024)


POSTGRES_SCRIPT = Path(__file__).parents[2] / "scripts" / "postgres-test.sh"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The SQLAlchemy URL of a fresh PostgreSQL database on loopback (``$SCOPEFLOW_TEST_PG_URL``
    when set, else a throwaway cluster started for this session)."""
    if url := os.environ.get("SCOPEFLOW_TEST_PG_URL"):
        yield url
        return
    root = tempfile.mkdtemp(prefix="scopeflow-pg-")
    os.chmod(root, 0o711)  # the server runs as the postgres account and must reach its folder
    cluster = os.path.join(root, "cluster")
    started = subprocess.run(
        ["bash", str(POSTGRES_SCRIPT), "start", cluster], capture_output=True, text=True, timeout=120
    )
    if started.returncode != 0:
        os.rmdir(root) if not os.listdir(root) else None
        pytest.skip(f"no PostgreSQL for the store tests: {started.stderr.strip()[-300:]}")
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(POSTGRES_SCRIPT), "stop", cluster], capture_output=True, timeout=60)
        os.rmdir(root)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStore]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    running = serve_in_thread(tmp_path_factory.mktemp("store"), limits=TEST_LIMITS, database_url=url)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def admin(store: RunningStore) -> Iterator[StoreClient]:
    with store.client() as client:
        yield client


def _user(store: RunningStore, admin: StoreClient, name: str) -> StoreClient:
    token = admin.create_user(name)
    admin.set_allocation("local", user=name, max_bytes=10**9, max_records=10**6)
    return StoreClient(store.url, token)


@pytest.fixture(scope="session")
def alice(store: RunningStore, admin: StoreClient) -> Iterator[StoreClient]:
    client = _user(store, admin, "alice")
    yield client
    client.close()


@pytest.fixture(scope="session")
def bob(store: RunningStore, admin: StoreClient) -> Iterator[StoreClient]:
    client = _user(store, admin, "bob")
    yield client
    client.close()


@pytest.fixture
def tag() -> str:
    """A tag no other test uses, to scope searches to one test's records."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def compiled_map() -> None:
    """The stores run in the tests' process: compile UMAP's numba code (seconds, once per
    process) here, so that no map query races an HTTP timeout while it compiles."""
    import numpy as np

    from storage.federation.similarity.map_view import layout

    layout(np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32))
