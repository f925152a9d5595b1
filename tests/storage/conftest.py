"""Fixtures: one real store server (uvicorn on loopback, a SQLite file) for the session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.federation.catalog.context import Limits
from storage.federation.client import StoreClient
from storage.federation.embedded import RunningStore, serve_in_thread

#: Small limits so the size checks can be exercised quickly, in bytes.
TEST_LIMITS = Limits(max_metadata_bytes=16 * 1024, max_body_bytes=256 * 1024, max_file_bytes=512 * 1024)


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStore]:
    running = serve_in_thread(tmp_path_factory.mktemp("store"), limits=TEST_LIMITS)
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


def make_tree(root: Path, n_files: int, size: int, seed: int = 0) -> dict[str, bytes]:
    """A Zarr-like tree of ``n_files`` chunk files of ``size`` bytes; returns path -> bytes."""
    import random

    rng = random.Random(seed)
    files = {"zarr.json": b'{"zarr_format": 3, "node_type": "group", "attributes": {"instrument": "twin"}}'}
    for i in range(n_files):
        files[f"frames/c/{i // 50}/{i % 50}"] = rng.randbytes(size)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files
