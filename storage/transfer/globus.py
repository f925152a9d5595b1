"""``GlobusBackend``: transfers through the Globus Transfer service.

Each file goes as one item of a ``TransferData(sync_level="checksum", verify_checksum=True)``
with our sha256 as its ``external_checksum`` (``checksum_algorithm="SHA256"``): Globus skips
files already identical at the destination, and fails the task unless the destination bytes
hash to our digest, which is the verification before the replica is recorded. The task id is
journalled, so a sync killed while Globus works waits for that task instead of resubmitting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from scopeflow.errors import IntegrityError
from storage.transfer.manifest import FileEntry, sha256_file
from storage.transfer.protocol import TransferError
from storage.transfer.state import SyncState

#: Terminal task states of the Transfer API.
DONE = {"SUCCEEDED", "FAILED"}


def _join(base: str, rel: str) -> str:
    return f"{base.rstrip('/')}/{rel}"


class GlobusBackend:
    """Send files from ``source_collection`` to ``destination_collection`` (collection UUIDs).

    ``transfer_client``: an authorised ``globus_sdk.TransferClient``. ``source_path``: where the
    local tree appears on the source collection. ``poll_interval_s`` and ``timeout_s`` bound the
    wait for the task (seconds).
    """

    name = "globus"

    def __init__(
        self,
        transfer_client: Any,
        source_collection: str,
        destination_collection: str,
        *,
        source_path: str,
        poll_interval_s: float = 15.0,
        timeout_s: float = 24 * 3600.0,
        label: str = "scopeflow sync",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        try:
            import globus_sdk  # noqa: F401
        except ImportError as error:  # pragma: no cover - a declared dependency
            raise ImportError(
                "the globus backend needs globus-sdk: pip install 'globus-sdk>=4.9,<4.10'"
            ) from error
        self.tc = transfer_client
        self.source_collection = source_collection
        self.destination_collection = destination_collection
        self.source_path = source_path
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.label = label
        self._sleep = sleep

    def plan(
        self, src_root: Path, dest: str, files: Sequence[FileEntry], state: SyncState
    ) -> list[FileEntry]:
        """Files not confirmed by an earlier succeeded task (the destination is not readable here)."""
        todo = []
        for entry in files:
            known = state.verified.get(entry.path)
            if (
                known is not None
                and entry.sha256 == known.sha256
                and (known.size, known.src_mtime_ns) == (entry.size, entry.mtime_ns)
            ):
                continue
            if entry.sha256 is None:  # Globus needs our digest up front
                entry = FileEntry(entry.path, entry.size, entry.mtime_ns, sha256_file(src_root / entry.path))
            todo.append(entry)
        return todo

    def send(self, src_root: Path, dest: str, files: Sequence[FileEntry], state: SyncState) -> None:
        """Submit one task for ``files`` (after finishing any task a killed sync left), wait, check."""
        if state.pending is not None:
            self._finish_pending(state)
        remaining = [
            f for f in files if not ((v := state.verified.get(f.path)) is not None and v.sha256 == f.sha256)
        ]
        if not remaining:
            return
        task_id = self._submit(dest, remaining)
        state.set_pending(task_id, [[f.path, f.size, f.mtime_ns, f.sha256] for f in remaining])
        self._finish_pending(state)

    def _submit(self, dest: str, files: Sequence[FileEntry]) -> str:
        import globus_sdk

        data = globus_sdk.TransferData(
            source_endpoint=self.source_collection,
            destination_endpoint=self.destination_collection,
            label=self.label,
            sync_level="checksum",
            verify_checksum=True,
            preserve_timestamp=True,
        )
        for f in files:
            assert f.sha256 is not None
            data.add_item(
                _join(self.source_path, f.path),
                _join(dest, f.path),
                external_checksum=f.sha256,
                checksum_algorithm="SHA256",
            )
        result = self._api("submit the transfer", lambda: self.tc.submit_transfer(data))
        return str(result["task_id"])

    def _finish_pending(self, state: SyncState) -> None:
        assert state.pending is not None
        task_id = state.pending["task_id"]
        items = [FileEntry(p, s, m, h) for p, s, m, h in state.pending["paths"]]
        try:
            task = self._wait(task_id)
        except TransferError as error:
            if getattr(error, "terminal", False):
                state.settle()  # a failed task is over: the next sync submits afresh
            raise
        expected = len(items)
        counted = task.get("files")
        if isinstance(counted, int) and counted != expected:
            state.settle()
            raise IntegrityError(
                f"Globus task {task_id} SUCCEEDED but reports {counted} files where {expected} were sent"
            )
        for entry in items:
            state.mark_verified(entry, None)
        state.settle()

    def _wait(self, task_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        while True:
            task = self._api(f"read task {task_id}", lambda: self.tc.get_task(task_id))
            status = task["status"]
            if status == "SUCCEEDED":
                return dict(task.data) if hasattr(task, "data") else dict(task)
            if status == "FAILED":
                fatal = task.get("fatal_error") or {}
                error = TransferError(
                    f"Globus task {task_id} FAILED: {fatal.get('code', 'unknown')}: "
                    f"{fatal.get('description', 'no description')} (nice_status={task.get('nice_status')})"
                )
                error.terminal = True  # type: ignore[attr-defined]
                raise error
            if time.monotonic() >= deadline:
                raise TransferError(
                    f"Globus task {task_id} is still {status} after {self.timeout_s:.0f} s "
                    f"(nice_status={task.get('nice_status')}); run the sync again to keep waiting"
                )
            self._sleep(self.poll_interval_s)

    def _api(self, what: str, call: Callable[[], Any]) -> Any:
        import globus_sdk

        try:
            return call()
        except globus_sdk.GlobusAPIError as error:
            raise TransferError(
                f"Globus could not {what}: HTTP {error.http_status} {error.code}: {error.message}"
            ) from error
        except globus_sdk.NetworkError as error:
            raise TransferError(f"Globus could not {what}: network error: {error}") from error
