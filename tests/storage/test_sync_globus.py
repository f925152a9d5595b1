"""Globus backend: the real TransferClient code runs against registered API responses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import globus_sdk
import pytest
import responses
from globus_sdk.testing import RegisteredResponse, load_response

from storage.transfer import sha256_file, sync_directory
from storage.transfer.globus import GlobusBackend
from storage.transfer.protocol import TransferError
from storage.transfer.state import SyncState
from tests.helpers.trees import make_tree

SRC = "aaaaaaaa-1111-4111-8111-111111111111"
DST = "bbbbbbbb-2222-4222-8222-222222222222"


@pytest.fixture
def mocked() -> Iterator[None]:
    responses.start()
    yield
    responses.stop()
    responses.reset()


def _task_responses(task_id: str, *documents: dict) -> None:
    """Register successive ``GET /task/<id>`` answers (responses replays them in order)."""
    for doc in documents:
        RegisteredResponse(
            service="transfer", method="GET", path=f"/v0.10/task/{task_id}", json={"task_id": task_id, **doc}
        ).add()


def _backend(**kw: object) -> GlobusBackend:
    return GlobusBackend(
        globus_sdk.TransferClient(),
        SRC,
        DST,
        source_path="/edge/data/run1",
        poll_interval_s=0,
        sleep=lambda _s: None,
        **kw,  # type: ignore[arg-type]
    )


def _submissions() -> list[dict]:
    return [
        json.loads(c.request.body)
        for c in responses.calls
        if c.request.method == "POST" and c.request.url.endswith("/transfer")
    ]


def test_transfer_request_and_success(mocked: None, tmp_path: Path) -> None:
    src = tmp_path / "run1"
    files = make_tree(src, 3, 100)
    submit = load_response(globus_sdk.TransferClient.submit_transfer)
    load_response(globus_sdk.TransferClient.get_submission_id)
    task_id = submit.metadata["task_id"]
    _task_responses(
        task_id,
        {"status": "ACTIVE", "nice_status": "Queued"},
        {"status": "SUCCEEDED", "nice_status": None, "files": 4, "files_skipped": 0, "fatal_error": None},
    )

    report = sync_directory(src, "/facility/records/7/run1", _backend(), state_dir=tmp_path / "state")
    assert report.files_sent == report.files_total == len(files)

    (doc,) = _submissions()
    assert doc["source_endpoint"] == SRC
    assert doc["destination_endpoint"] == DST
    assert doc["sync_level"] == 3  # "checksum"
    assert doc["verify_checksum"] is True
    assert doc["submission_id"] == submit.metadata["submission_id"]
    items = {i["source_path"]: i for i in doc["DATA"]}
    assert set(items) == {f"/edge/data/run1/{rel}" for rel in files}
    item = items["/edge/data/run1/frames/c/0/1"]
    assert item["destination_path"] == "/facility/records/7/run1/frames/c/0/1"
    assert item["checksum_algorithm"] == "SHA256"
    assert item["external_checksum"] == sha256_file(src / "frames/c/0/1")
    polls = [c for c in responses.calls if c.request.method == "GET" and task_id in c.request.url]
    assert len(polls) == 2  # waited through ACTIVE, then the final status check

    # A rerun sends nothing: the journal holds what the succeeded task verified.
    again = sync_directory(src, "/facility/records/7/run1", _backend(), state_dir=tmp_path / "state")
    assert again.files_sent == 0
    assert len(_submissions()) == 1


def test_failed_task_is_reported_with_its_code(mocked: None, tmp_path: Path) -> None:
    src = tmp_path / "run1"
    make_tree(src, 2, 100)
    submit = load_response(globus_sdk.TransferClient.submit_transfer)
    load_response(globus_sdk.TransferClient.get_submission_id)
    task_id = submit.metadata["task_id"]
    _task_responses(
        task_id,
        {
            "status": "FAILED",
            "nice_status": "PERMISSION_DENIED",
            "fatal_error": {"code": "PERMISSION_DENIED", "description": "No write access to /facility"},
        },
    )
    with pytest.raises(TransferError, match=rf"task {task_id} FAILED: PERMISSION_DENIED: No write access"):
        sync_directory(src, "/facility/x", _backend(), state_dir=tmp_path / "state")
    state = SyncState.for_destination("globus", "/facility/x", tmp_path / "state")
    assert state.verified == {}  # nothing counts as delivered
    assert state.pending is None  # and the next sync submits afresh


def test_api_error_is_surfaced_with_status_and_code(mocked: None, tmp_path: Path) -> None:
    src = tmp_path / "run1"
    make_tree(src, 1, 10)
    load_response(globus_sdk.TransferClient.get_submission_id)
    load_response(globus_sdk.TransferClient.submit_transfer, case="failure")
    with pytest.raises(TransferError, match=r"HTTP 400 ClientError\.BadRequest\.NoTransferItems"):
        sync_directory(src, "/facility/y", _backend(), state_dir=tmp_path / "state")


def test_resumed_sync_waits_for_the_task_a_killed_sync_left(mocked: None, tmp_path: Path) -> None:
    src = tmp_path / "run1"
    make_tree(src, 2, 100)
    state_dir = tmp_path / "state"
    # A previous sync submitted a task and was killed before it finished.
    from storage.transfer.manifest import build_manifest

    manifest = build_manifest(src)
    state = SyncState.for_destination("globus", "/facility/z", state_dir)
    state.set_pending("task-left-behind", [[e.path, e.size, e.mtime_ns, e.sha256] for e in manifest.values()])
    state.close()
    _task_responses("task-left-behind", {"status": "SUCCEEDED", "files": len(manifest)})

    report = sync_directory(src, "/facility/z", _backend(), state_dir=state_dir)
    assert report.files_total == len(manifest)
    assert _submissions() == []  # waited for the old task instead of submitting a new one


def test_timeout_keeps_the_task_for_the_next_run(mocked: None, tmp_path: Path) -> None:
    src = tmp_path / "run1"
    make_tree(src, 1, 10)
    submit = load_response(globus_sdk.TransferClient.submit_transfer)
    load_response(globus_sdk.TransferClient.get_submission_id)
    _task_responses(submit.metadata["task_id"], {"status": "INACTIVE", "nice_status": "AUTH_EXPIRED"})
    with pytest.raises(TransferError, match=r"still INACTIVE .*AUTH_EXPIRED.*run the sync again"):
        sync_directory(src, "/facility/w", _backend(timeout_s=0), state_dir=tmp_path / "state")
    state = SyncState.for_destination("globus", "/facility/w", tmp_path / "state")
    assert state.pending is not None
    assert state.pending["task_id"] == submit.metadata["task_id"]
