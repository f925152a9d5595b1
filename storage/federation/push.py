"""``push_dataset``: sync a dataset directory into a store repository and record the replica.

The store is told about the replica only after every file is confirmed at the destination by
sha256, so a replica entry always describes bytes that are really there.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scopeflow.errors import InputError, NotFoundError
from storage.federation.client import StoreClient
from storage.federation.errors import PermissionDeniedError
from storage.federation.identifiers import parse_ref
from storage.transfer.local import LocalBackend
from storage.transfer.protocol import TransferBackend
from storage.transfer.state import default_state_dir
from storage.transfer.sync import SyncReport, sync_directory


@dataclass
class PushResult:
    """The record pushed, what the sync moved, and the replica the store recorded."""

    record: str
    report: SyncReport
    replica: dict[str, Any]


def push_dataset(
    client: StoreClient,
    path: str | Path,
    *,
    record: str | None = None,
    repository: str = "local",
    backend: TransferBackend | None = None,
    state_dir: Path | None = None,
) -> PushResult:
    """Sync ``path`` into ``repository`` and record the verified replica on its record.

    ``record``: the dataset's record id; when None, the record an earlier push of this
    directory to this store and repository created (so a killed push resumes into it), else a
    new dataset record (with the provenance schema). Write permission on the record is checked
    before any byte moves. ``backend``: defaults to ``LocalBackend()`` for local repositories; a
    Globus repository needs a ``GlobusBackend``. The data lands at
    ``<repository path>/records/<n>/<directory name>``.
    """
    from storage.provenance import record_dataset

    path = Path(path).resolve()
    if not path.is_dir():
        raise InputError(f"cannot push {path}: not a directory (a Zarr dataset is one)")
    repo = client.repository(repository)
    memo = _memo_file(client, repository, path, state_dir)
    record_id = record or _remembered(client, memo)
    if record_id is None:
        record_id = record_dataset(client, path)
        _remember(memo, record_id)
    info = client.get(record_id)
    if info.get("access") not in ("write", "admin"):
        raise PermissionDeniedError(f"write permission on {info['id']} is needed to push data into it")
    record_id = info["id"]
    number = parse_ref(record_id, "d").number
    rel = f"records/{number}/{path.name}"
    if repo["kind"] == "local":
        backend = backend or LocalBackend()
        dest = str(Path(repo["path"]) / rel)
    else:
        if backend is None:
            raise InputError(
                f"repository {repository!r} is a Globus collection: pass a GlobusBackend "
                "(an authorised TransferClient and the source collection)"
            )
        dest = f"{repo['path'].rstrip('/')}/{rel}"
    report = sync_directory(path, dest, backend, state_dir=state_dir)
    replica = client.add_replica(record_id, repository, rel, report.files())
    return PushResult(record_id, report, replica)


def _memo_file(client: StoreClient, repository: str, path: Path, state_dir: Path | None) -> Path:
    """Where the record a push of ``path`` created is remembered (beside the sync journals)."""
    key = hashlib.sha256(f"{client.url}\0{repository}\0{path}".encode()).hexdigest()[:24]
    return (state_dir or default_state_dir()) / f"push-{key}.json"


def _remembered(client: StoreClient, memo: Path) -> str | None:
    """The record an earlier push created, if it is still there."""
    try:
        record_id = json.loads(memo.read_text())["record"]
        return str(client.get(record_id)["id"])
    except (OSError, ValueError, KeyError, TypeError, NotFoundError):
        return None


def _remember(memo: Path, record_id: str) -> None:
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(".tmp")
    tmp.write_text(json.dumps({"record": record_id}))
    os.replace(tmp, memo)
