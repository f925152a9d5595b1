"""``push_dataset``: sync a dataset directory into a store repository and record the replica.

The store is told about the replica only after every file is confirmed at the destination by
sha256, so a replica entry always describes bytes that are really there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scopeflow.errors import InputError
from storage.federation.client import StoreClient
from storage.federation.identifiers import parse_ref
from storage.transfer.local import LocalBackend
from storage.transfer.protocol import TransferBackend
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

    ``record``: the dataset's record id; when None a dataset record is created (with the
    provenance schema). ``backend``: defaults to ``LocalBackend()`` for local repositories; a
    Globus repository needs a ``GlobusBackend``. The data lands at
    ``<repository path>/records/<n>/<directory name>``.
    """
    from storage.provenance import record_dataset

    path = Path(path).resolve()
    if not path.is_dir():
        raise InputError(f"cannot push {path}: not a directory (a Zarr dataset is one)")
    record_id = record or record_dataset(client, path)
    number = parse_ref(record_id, "d").number
    if number is None:  # an alias: ask the store for the id
        record_id = client.get(record_id)["id"]
        number = parse_ref(record_id, "d").number
    repo = client.repository(repository)
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
