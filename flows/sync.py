"""Prefect flow: push datasets (Zarr directories) into a store repository, verified and incremental.

The work is ``storage.federation.push.push_dataset`` (usable without Prefect); this module only
wraps it. Deploy ``flows/sync.py:sync_all`` on a schedule to keep the facility copy current.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from scopeflow.config import default_dataset_dir
from scopeflow.errors import ServiceError
from storage.federation.client import StoreClient
from storage.federation.push import push_dataset
from storage.provenance import find_dataset_record


def _transient(_task: Any, _run: Any, state: Any) -> bool:
    """Retry only when the store or the transfer service could not be reached."""
    try:
        state.result()
    except ServiceError:
        return True
    except Exception:
        return False
    return False


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=_transient)
def push_task(path: str, repository: str, record: str | None) -> dict[str, Any]:
    """Push one dataset directory; returns what moved and the record id."""
    with StoreClient.from_env() as client:
        result = push_dataset(client, path, record=record, repository=repository)
    r = result.report
    return {
        "record": result.record,
        "files_total": r.files_total,
        "files_sent": r.files_sent,
        "bytes_sent": r.bytes_sent,
        "seconds": r.seconds,
    }


@flow(name="sync-dataset")
def sync_dataset(path: str, repository: str = "local", record: str | None = None) -> dict[str, Any]:
    """Push one dataset and record its verified replica."""
    out = push_task(path, repository, record)
    get_run_logger().info("synced %s: %s files sent of %s", path, out["files_sent"], out["files_total"])
    return out


def find_datasets(root: Path) -> list[Path]:
    """Zarr groups (directories holding ``zarr.json``) directly under ``root``."""
    return sorted(p for p in root.iterdir() if (p / "zarr.json").is_file()) if root.is_dir() else []


@flow(name="sync-all")
def sync_all(root: str | None = None, repository: str = "local") -> list[dict[str, Any]]:
    """Push every dataset under ``root`` (default: scopeflow's dataset directory).

    A dataset already recorded (a record whose ``md.path`` is the directory) reuses its record.
    """
    base = Path(root) if root else default_dataset_dir()
    results = []
    datasets = find_datasets(base)
    with StoreClient.from_env() as client:
        known = {ds: find_dataset_record(client, ds) for ds in datasets}
    for ds in datasets:
        results.append(push_task(str(ds), repository, known[ds]))
    return results
