"""A Globus Transfer service built from software parts, answering the real SDK offline.

``globus_sdk.testing`` replays canned answers, which is enough to check a request; a
conformance suite needs a destination that really receives bytes. ``TransferService``
answers the Transfer API calls ``GlobusBackend`` makes (``GET /submission_id``,
``POST /transfer``, ``GET /task/<id>``) through ``responses``, so the real
``globus_sdk.TransferClient`` code runs, and carries the task out as Globus would: each
collection is a local directory, ``sync_level="checksum"`` skips identical files,
``verify_checksum`` with an ``external_checksum`` fails the task when the bytes that arrived
hash otherwise, and a destination that refuses writes fails it with ``PERMISSION_DENIED``.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import globus_sdk
import responses
from globus_sdk.config import get_service_url

#: Globus numbers its sync levels; 3 is "checksum".
SYNC_CHECKSUM = 3


class TransferService:
    """Collections (UUID -> local directory) and the tasks submitted to them."""

    def __init__(self, collections: dict[str, Path]) -> None:
        self.collections = collections
        self.tasks: dict[str, dict[str, Any]] = {}
        self.submissions: list[dict[str, Any]] = []
        self.refusing: set[str] = set()  # collections that deny writes
        self.corrupting = False  # flip a byte of every file written (a faulty storage system)

    def local(self, collection: str, path: str) -> Path:
        """Where ``path`` on ``collection`` lies on this machine."""
        return self.collections[collection] / path.lstrip("/")

    @contextmanager
    def running(self) -> Iterator[globus_sdk.TransferClient]:
        """Answer Transfer API calls while inside; yields a client for them."""
        base = get_service_url("transfer").rstrip("/") + "/v0.10"
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            mock.add_callback(responses.GET, f"{base}/submission_id", callback=self._submission_id)
            mock.add_callback(responses.POST, f"{base}/transfer", callback=self._submit)
            mock.add_callback(
                responses.GET, re.compile(rf"{re.escape(base)}/task/[^/?]+"), callback=self._task
            )
            yield globus_sdk.TransferClient()

    # -- the API ------------------------------------------------------------------------------

    def _submission_id(self, request: Any) -> tuple[int, dict[str, str], str]:
        return 200, {}, json.dumps({"value": str(uuid.uuid4())})

    def _submit(self, request: Any) -> tuple[int, dict[str, str], str]:
        doc = json.loads(request.body)
        self.submissions.append(doc)
        if not doc.get("DATA"):
            return _error(
                400, "ClientError.BadRequest.NoTransferItems", "A transfer requires at least one item"
            )
        task_id = str(uuid.uuid4())
        self.tasks[task_id] = self._run(task_id, doc)
        return (
            202,
            {},
            json.dumps(
                {
                    "DATA_TYPE": "transfer_result",
                    "code": "Accepted",
                    "task_id": task_id,
                    "submission_id": doc.get("submission_id"),
                }
            ),
        )

    def _task(self, request: Any) -> tuple[int, dict[str, str], str]:
        task_id = request.url.rsplit("/", 1)[-1].split("?")[0]
        task = self.tasks.get(task_id)
        if task is None:
            return _error(404, "TaskNotFound", f"Task {task_id} not found")
        return 200, {}, json.dumps(task)

    # -- the transfer -------------------------------------------------------------------------

    def _run(self, task_id: str, doc: dict[str, Any]) -> dict[str, Any]:
        src, dst = doc["source_endpoint"], doc["destination_endpoint"]
        task = {
            "DATA_TYPE": "task",
            "task_id": task_id,
            "type": "TRANSFER",
            "label": doc.get("label"),
            "files": len(doc["DATA"]),
            "files_skipped": 0,
            "files_transferred": 0,
        }
        if dst in self.refusing:
            return task | _failed("PERMISSION_DENIED", f"No write access to collection {dst}")
        for item in doc["DATA"]:
            data = self.local(src, item["source_path"]).read_bytes()
            target = self.local(dst, item["destination_path"])
            if doc.get("sync_level") == SYNC_CHECKSUM and target.is_file() and target.read_bytes() == data:
                task["files_skipped"] += 1
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:] if self.corrupting and data else data)
            task["files_transferred"] += 1
            expected = item.get("external_checksum")
            arrived = hashlib.sha256(target.read_bytes()).hexdigest()
            if doc.get("verify_checksum") and expected and arrived != expected:
                return task | _failed("CHECKSUM_MISMATCH", f"checksum of {item['destination_path']} differs")
        return task | {"status": "SUCCEEDED", "nice_status": None, "fatal_error": None}


def _failed(code: str, description: str) -> dict[str, Any]:
    return {
        "status": "FAILED",
        "nice_status": code,
        "fatal_error": {"code": code, "description": description},
    }


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], str]:
    return status, {}, json.dumps({"code": code, "message": message, "request_id": "sim"})
