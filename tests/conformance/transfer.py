"""The contract of ``storage.transfer.TransferBackend``, for every way bytes move.

Subclass ``TransferContract`` as ``TestSomething`` and provide the fixtures ``backend``
(the backend under test), ``destination`` (a ``Destination``: the ``dest`` string the sync
engine is given and the local directory where the bytes it sends can be read back) and the
hooks ``refuse``/``allow`` (make the destination deny writes, then accept them again). Each
test syncs through ``sync_directory``, the engine every caller uses.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from scopeflow.errors import ScopeflowError
from storage.transfer import SyncState, TransferBackend, sync_directory
from tests.helpers.trees import make_tree


@dataclass(frozen=True)
class Destination:
    """``dest`` as the backend is given it, and where its files can be read on this machine."""

    dest: str
    local: Path


class TransferContract:
    """Every ``TransferBackend`` passes these tests."""

    @pytest.fixture
    def backend(self) -> TransferBackend:
        raise NotImplementedError

    @pytest.fixture
    def destination(self, tmp_path: Path) -> Destination:
        raise NotImplementedError

    def refuse(self, destination: Destination) -> None:
        """Make the destination deny every write."""
        raise NotImplementedError

    def allow(self, destination: Destination) -> None:
        """Undo ``refuse``."""
        raise NotImplementedError

    @pytest.fixture
    def src(self, tmp_path: Path) -> Path:
        return tmp_path / "src" / "run1"

    def sync(self, src: Path, destination: Destination, backend: TransferBackend, tmp_path: Path):
        return sync_directory(src, destination.dest, backend, state_dir=tmp_path / "state")

    def assert_arrived(self, destination: Destination, files: dict[str, bytes]) -> None:
        for rel, data in files.items():
            assert (destination.local / rel).read_bytes() == data, rel

    # -- the contract -------------------------------------------------------------------------

    def test_implements_the_protocol(self, backend: TransferBackend) -> None:
        assert isinstance(backend, TransferBackend)
        assert re.fullmatch(r"[a-z][a-z0-9_-]*", backend.name), "the name keys the sync journal"

    def test_a_tree_arrives_byte_identical_and_checksummed(
        self, backend: TransferBackend, destination: Destination, src: Path, tmp_path: Path
    ) -> None:
        files = make_tree(src, 5, 1000)
        odd = {"empty": b"", "notes/a name with spaces é.txt": "Å/px".encode()}
        for rel, data in odd.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        files |= odd
        report = self.sync(src, destination, backend, tmp_path)
        assert report.backend == backend.name
        assert report.files_total == report.files_sent == len(files)
        assert report.bytes_total == sum(len(d) for d in files.values())
        self.assert_arrived(destination, files)
        # Nothing else is left there: no temporary or partial files of the backend's own.
        landed = {p.relative_to(destination.local).as_posix() for p in destination.local.rglob("*")}
        assert {p for p in landed if not (destination.local / p).is_dir()} == set(files)
        assert {p: e.sha256 for p, e in report.manifest.items()} == {
            p: hashlib.sha256(d).hexdigest() for p, d in files.items()
        }

    def test_a_rerun_sends_nothing(
        self, backend: TransferBackend, destination: Destination, src: Path, tmp_path: Path
    ) -> None:
        make_tree(src, 4, 500)
        self.sync(src, destination, backend, tmp_path)
        again = self.sync(src, destination, backend, tmp_path)
        assert again.files_sent == 0 and again.files_total == 5

    def test_only_new_and_changed_files_are_sent(
        self, backend: TransferBackend, destination: Destination, src: Path, tmp_path: Path
    ) -> None:
        files = make_tree(src, 4, 500)
        self.sync(src, destination, backend, tmp_path)
        changed = {
            "frames/c/0/1": bytes(500),  # same size, other bytes
            "frames/c/0/2": files["frames/c/0/2"] + b"grown",
            "frames/c/1/0": b"a new chunk",
        }
        for rel, data in changed.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        # A later mtime, as a rewrite within the clock's resolution would not give.
        st = (src / "frames/c/0/1").stat()
        os.utime(src / "frames/c/0/1", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        report = self.sync(src, destination, backend, tmp_path)
        assert report.sent == sorted(changed)
        assert report.bytes_sent == sum(len(d) for d in changed.values())
        self.assert_arrived(destination, files | changed)

    def test_files_removed_at_the_source_stay_at_the_destination(
        self, backend: TransferBackend, destination: Destination, src: Path, tmp_path: Path
    ) -> None:
        files = make_tree(src, 3, 100)
        self.sync(src, destination, backend, tmp_path)
        (src / "frames/c/0/0").unlink()
        report = self.sync(src, destination, backend, tmp_path)
        assert report.files_total == len(files) - 1 and report.files_sent == 0
        self.assert_arrived(destination, files)

    def test_an_empty_tree_sends_nothing(
        self, backend: TransferBackend, destination: Destination, src: Path, tmp_path: Path
    ) -> None:
        src.mkdir(parents=True)
        report = self.sync(src, destination, backend, tmp_path)
        assert (report.files_total, report.files_sent, report.bytes_total) == (0, 0, 0)

    def test_the_journal_holds_what_was_verified(
        self, backend: TransferBackend, destination: Destination, src: Path, tmp_path: Path
    ) -> None:
        files = make_tree(src, 3, 100)
        self.sync(src, destination, backend, tmp_path)
        state = SyncState.for_destination(backend.name, destination.dest, tmp_path / "state")
        try:
            assert {p: v.sha256 for p, v in state.verified.items()} == {
                p: hashlib.sha256(d).hexdigest() for p, d in files.items()
            }
            assert state.pending is None
        finally:
            state.close()

    def test_a_refusing_destination_fails_the_sync_and_the_next_one_completes_it(
        self, backend: TransferBackend, destination: Destination, src: Path, tmp_path: Path
    ) -> None:
        files = make_tree(src, 3, 100)
        self.refuse(destination)
        with pytest.raises(ScopeflowError):
            self.sync(src, destination, backend, tmp_path)
        state = SyncState.for_destination(backend.name, destination.dest, tmp_path / "state")
        assert state.verified == {}  # nothing counts as delivered
        state.close()
        self.allow(destination)
        report = self.sync(src, destination, backend, tmp_path)
        assert report.files_sent == report.files_total == len(files)
        self.assert_arrived(destination, files)
