"""Local sync: incremental, verified, resumable after SIGKILL, corruption detected and repaired."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from scopeflow.errors import InputError, IntegrityError, NotFoundError
from storage.federation.client import StoreClient
from storage.federation.push import push_dataset
from storage.transfer import LocalBackend, sha256_file, sync_directory
from storage.transfer import local as local_backend
from tests.helpers.trees import make_tree


def _same_tree(src: Path, dest: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data, rel
    assert not (dest / ".scopeflow-partial").exists()


def test_existing_identical_destination_is_not_resent_without_a_journal(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_tree(src, 10, 1000)
    sync_directory(src, dest, LocalBackend(), state_dir=tmp_path / "s1")
    report = sync_directory(src, dest, LocalBackend(), state_dir=tmp_path / "fresh-journal")
    assert report.files_sent == 0  # compared by sha256 instead


def test_corrupted_destination_file_is_detected_and_sent_again(tmp_path: Path) -> None:
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "state"
    files = make_tree(src, 20, 2048)
    sync_directory(src, dest, LocalBackend(), state_dir=state)

    victim = dest / "frames/c/0/5"
    victim.write_bytes(b"\xff" * 2048)  # same size, different bytes, new mtime
    report = sync_directory(src, dest, LocalBackend(), state_dir=state)
    assert report.sent == ["frames/c/0/5"]
    _same_tree(src, dest, files)

    # Silent corruption that keeps size and mtime: only a full verification sees it.
    st = victim.stat()
    with open(victim, "r+b") as f:
        f.write(b"\x00\x01")
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sync_directory(src, dest, LocalBackend(), state_dir=state).files_sent == 0
    full = sync_directory(src, dest, LocalBackend(verify="full"), state_dir=state)
    assert full.sent == ["frames/c/0/5"]
    _same_tree(src, dest, files)


_CHILD = """
import sys
from pathlib import Path
from storage.transfer import LocalBackend, sync_directory
src, dest, state = map(Path, sys.argv[1:4])
sync_directory(src, dest, LocalBackend(workers=1, max_rate=float(sys.argv[4])), state_dir=state)
"""


def _journal_ok(state: Path) -> set[str]:
    done = set()
    for journal in state.glob("*.jsonl"):
        for line in journal.read_text().splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            if item.get("op") == "ok":
                done.add(item["path"])
    return done


def test_killed_sync_resumes_and_moves_only_what_is_missing(tmp_path: Path) -> None:
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "state"
    files = make_tree(src, 60, 32 * 1024)
    rate = 1.0e6  # bytes/s: the whole tree would take ~2 s
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(src), str(dest), str(state), str(rate)],
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )
    deadline = time.monotonic() + 30
    while len(_journal_ok(state)) < 15 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    done_before = _journal_ok(state)
    assert 15 <= len(done_before) < len(files), "the kill must land mid-way"
    mtimes = {p: (dest / p).stat().st_mtime_ns for p in done_before}

    report = sync_directory(src, dest, LocalBackend(), state_dir=state)
    assert not set(report.sent) & done_before  # nothing verified before is moved again
    assert report.files_sent <= len(files) - len(done_before)
    assert report.files_sent >= len(files) - len(done_before) - 1  # at most one was renamed, unjournalled
    assert all((dest / p).stat().st_mtime_ns == m for p, m in mtimes.items())
    _same_tree(src, dest, files)
    assert sync_directory(src, dest, LocalBackend(), state_dir=state).files_sent == 0


def test_push_dataset_records_a_verified_replica(alice: StoreClient, tmp_path: Path, tag: str) -> None:
    src = tmp_path / f"run-{tag}.zarr"
    files = make_tree(src, 12, 512)
    result = push_dataset(alice, src, state_dir=tmp_path / "state")
    rec = alice.get(result.record)
    assert rec["metadata"]["kind"] == "dataset"
    assert rec["metadata"]["attrs"] == {"instrument": "twin"}
    assert rec["size"] == sum(map(len, files.values()))
    (replica,) = alice.replicas(result.record)
    assert replica["repository"] == "local"
    assert replica["path"] == f"records/{result.record[2:]}/{src.name}"
    manifest = {f["path"]: f["sha256"] for f in replica["files"]}
    assert manifest == {rel: sha256_file(src / rel) for rel in files}
    assert alice.get_file(result.record, "zarr.json", repository="local") == files["zarr.json"]

    again = push_dataset(alice, src, record=result.record, state_dir=tmp_path / "state")
    assert again.report.files_sent == 0


def test_push_refuses_bad_input(alice: StoreClient, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a directory"):
        push_dataset(alice, tmp_path / "missing")
    with pytest.raises(NotFoundError, match="not a directory"):
        sync_directory(tmp_path / "missing", tmp_path / "d", LocalBackend())
    with pytest.raises(InputError, match="verify must be"):
        LocalBackend(verify="sometimes")


def _corrupt_before_read_back(monkeypatch: pytest.MonkeyPatch, times: int) -> list[int]:
    """Flip a destination byte just before the backend reads it back, ``times`` times."""
    real = local_backend._hash_back
    calls = [0]

    def flipping(fd: int, digest: Any, start: int, end: int) -> None:
        if calls[0] < times:
            calls[0] += 1
            os.pwrite(fd, bytes([os.pread(fd, 1, start)[0] ^ 0xFF]), start)
        real(fd, digest, start, end)

    monkeypatch.setattr(local_backend, "_hash_back", flipping)
    return calls


@pytest.mark.parametrize("size", [4096, local_backend.TRAIL_MIN + 12345])  # read back after, or trailing
def test_bytes_that_do_not_read_back_equal_are_copied_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "state"
    files = {"big": os.urandom(size)}
    src.mkdir()
    (src / "big").write_bytes(files["big"])
    calls = _corrupt_before_read_back(monkeypatch, times=1)
    report = sync_directory(src, dest, LocalBackend(), state_dir=state)
    assert calls[0] == 1 and report.sent == ["big"]
    assert report.manifest["big"].sha256 == sha256_file(src / "big")
    _same_tree(src, dest, files)


def test_destination_that_never_verifies_is_not_put_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "state"
    make_tree(src, 3, 1000)
    _corrupt_before_read_back(monkeypatch, times=10**6)
    with pytest.raises(IntegrityError, match="does not match its source after two copies"):
        sync_directory(src, dest, LocalBackend(workers=1), state_dir=state)
    assert not [p for p in dest.rglob("*") if p.is_file()]  # nothing unverified in place
    assert not _journal_ok(state)


@pytest.mark.parametrize("size", [4096, local_backend.TRAIL_MIN + 12345])
def test_a_file_system_without_kernel_copy_gets_the_same_verified_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    import errno

    def unsupported(*args: Any, **kwargs: Any) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(local_backend.os, "copy_file_range", unsupported)
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "state"
    files = {"f": os.urandom(size)}
    src.mkdir()
    (src / "f").write_bytes(files["f"])
    report = sync_directory(src, dest, LocalBackend(), state_dir=state)
    assert report.sent == ["f"]
    _same_tree(src, dest, files)
