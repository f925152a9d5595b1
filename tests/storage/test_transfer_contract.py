"""Every transfer backend against the shared contract (tests/conformance/transfer.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.transfer import LocalBackend, TransferBackend, TransferError
from storage.transfer.globus import GlobusBackend
from tests.conformance.transfer import Destination, TransferContract
from tests.helpers.globus import TransferService
from tests.helpers.trees import make_tree

SRC = "aaaaaaaa-1111-4111-8111-111111111111"
DST = "bbbbbbbb-2222-4222-8222-222222222222"


class TestLocalBackend(TransferContract):
    @pytest.fixture(params=["changed", "full"])
    def backend(self, request: pytest.FixtureRequest) -> TransferBackend:
        return LocalBackend(workers=2, verify=request.param)

    @pytest.fixture
    def destination(self, tmp_path: Path) -> Destination:
        return Destination(str(tmp_path / "dest" / "run1"), tmp_path / "dest" / "run1")

    def refuse(self, destination: Destination) -> None:
        # A file where the destination directory must go: every write under it fails.
        destination.local.parent.mkdir(parents=True, exist_ok=True)
        destination.local.write_bytes(b"in the way")

    def allow(self, destination: Destination) -> None:
        destination.local.unlink()


class TestGlobusBackend(TransferContract):
    @pytest.fixture
    def service(self, tmp_path: Path) -> TransferService:
        return TransferService({SRC: tmp_path / "edge", DST: tmp_path / "facility"})

    @pytest.fixture
    def backend(self, service: TransferService, tmp_path: Path) -> Iterator[TransferBackend]:
        # The source collection exports tmp_path/edge; the trees synced lie under tmp_path/src.
        (tmp_path / "src").mkdir(exist_ok=True)
        (tmp_path / "edge").symlink_to(tmp_path / "src", target_is_directory=True)
        with service.running() as client:
            yield GlobusBackend(
                client, SRC, DST, source_path="/run1", poll_interval_s=0, sleep=lambda _s: None
            )

    @pytest.fixture
    def destination(self, tmp_path: Path) -> Destination:
        return Destination("/records/7/run1", tmp_path / "facility" / "records" / "7" / "run1")

    @pytest.fixture(autouse=True)
    def _service(self, service: TransferService) -> None:
        self.service = service  # for the refuse/allow hooks, which take no fixtures

    def refuse(self, destination: Destination) -> None:
        self.service.refusing.add(DST)

    def allow(self, destination: Destination) -> None:
        self.service.refusing.discard(DST)

    def test_bytes_that_arrive_corrupted_fail_the_task(
        self, backend: TransferBackend, destination: Destination, src: Path, tmp_path: Path
    ) -> None:
        # Beyond the contract: the checksum Globus verifies is ours, so a faulty destination is caught.
        make_tree(src, 2, 100)
        self.service.corrupting = True
        with pytest.raises(TransferError, match="CHECKSUM_MISMATCH"):
            self.sync(src, destination, backend, tmp_path)
        self.service.corrupting = False
        shutil.rmtree(destination.local)
        assert self.sync(src, destination, backend, tmp_path).files_sent == 3
