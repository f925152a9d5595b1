"""Replicas: which repositories hold a record's bytes, with sha256 per file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select

from scopeflow.errors import InputError, NotFoundError
from storage.federation.access import Level, Principal
from storage.federation.api_models import ReplicaIn
from storage.federation.catalog.context import Catalog, Ctx
from storage.federation.catalog.lookup import repository_by_name, resolve_record
from storage.federation.catalog.quota import check_bytes_quota
from storage.federation.errors import ChecksumMismatchError, PermissionDeniedError
from storage.federation.identifiers import format_id, safe_relative_path
from storage.federation.models import Record, Replica, ReplicaFile, Repository, utcnow
from storage.transfer.manifest import FileEntry, build_manifest


def default_replica_path(record_id: int) -> str:
    """Where a record's data goes inside a repository when the caller names no path."""
    return f"records/{record_id}"


def check_replica_path(record_id: int, path: str) -> str:
    """``path`` normalised, if it lies in the record's own folder (``records/<n>``)."""
    rel = safe_relative_path(path, "replica path")
    own = default_replica_path(record_id)
    if rel != own and not rel.startswith(own + "/"):
        raise PermissionDeniedError(f"replica path {path!r}: a replica of d/{record_id} lies under {own}/")
    return rel


@dataclass(frozen=True)
class _Plan:
    record_id: int
    repository: str
    kind: str
    path: str
    directory: Path | None  # local repositories: the replica's folder on disk
    known: dict[str, FileEntry]


def _plan(ctx: Ctx, ref: str, body: ReplicaIn) -> _Plan:
    record = resolve_record(ctx, ref, Level.WRITE)
    repo = repository_by_name(ctx, body.repository)
    path = check_replica_path(record.id, body.path)
    known: dict[str, FileEntry] = {}
    directory = None
    if repo.kind == "local":
        root = Path(repo.path).resolve()
        directory = root / path
        if not directory.resolve().is_relative_to(root / default_replica_path(record.id)):
            raise InputError(f"replica path {body.path!r} leaves the folder of d/{record.id}")
        rows = ctx.session.execute(
            select(ReplicaFile)
            .join(Replica, Replica.id == ReplicaFile.replica_id)
            .where(Replica.record_id == record.id, Replica.repository_id == repo.id, Replica.path == path)
        ).scalars()
        known = {f.path: FileEntry(f.path, f.size, f.mtime_ns, f.sha256) for f in rows if f.mtime_ns}
    return _Plan(record.id, repo.name, repo.kind, path, directory, known)


def _server_manifest(plan: _Plan, body: ReplicaIn) -> dict[str, tuple[int, str, int | None]]:
    """path -> (size, sha256, mtime_ns) of the replica, hashed here from the bytes on disk.

    Files the client lists must all be there with the same size and sha256; without a list,
    every file in the folder is the replica. Files unchanged (size, mtime) since the server
    last hashed them keep that digest.
    """
    assert plan.directory is not None
    if not plan.directory.is_dir() or plan.directory.is_symlink():
        raise NotFoundError(f"repository {plan.repository!r} holds no folder {plan.path!r}")
    on_disk = build_manifest(plan.directory, known=plan.known)
    if body.files is None:
        return {p: (e.size, e.sha256 or "", e.mtime_ns) for p, e in on_disk.items()}
    out: dict[str, tuple[int, str, int | None]] = {}
    for f in body.files:
        rel = safe_relative_path(f.path, "file path")
        if rel in out:
            raise InputError(f"file {rel!r} is listed twice in the replica manifest")
        entry = on_disk.get(rel)
        if entry is None:
            raise ChecksumMismatchError(f"{plan.path}/{rel} is not in repository {plan.repository!r}")
        if (entry.size, entry.sha256) != (f.size, f.sha256):
            raise ChecksumMismatchError(
                f"{plan.path}/{rel}: the repository holds {entry.size} bytes with sha256 "
                f"{entry.sha256}, not what the manifest says ({f.size} bytes, {f.sha256})"
            )
        out[rel] = (entry.size, entry.sha256 or "", entry.mtime_ns)
    return out


def add_replica(catalog: Catalog, principal: Principal, ref: str, body: ReplicaIn) -> dict[str, Any]:
    """Record (or replace) a verified replica; needs write on the record and room in the quota.

    The path must lie in the record's own folder. For a local repository the server hashes
    the files itself, outside any transaction (a replica of gigabytes holds no lock); a
    manifest the client sends is checked against those digests, never taken on trust. A Globus
    repository's bytes are out of the server's reach: its manifest is the client's, confirmed
    by the Globus task's own checksums (SECURITY.md).
    """
    plan = catalog.read(principal, lambda ctx: _plan(ctx, ref, body))
    if plan.kind == "local":
        files = _server_manifest(plan, body)
    else:
        if body.files is None:
            raise InputError("a replica in a Globus repository needs its file manifest")
        files = {}
        for f in body.files:
            rel = safe_relative_path(f.path, "file path")
            if rel in files:
                raise InputError(f"file {rel!r} is listed twice in the replica manifest")
            files[rel] = (f.size, f.sha256, None)
    return catalog.write(principal, lambda ctx: _store_replica(ctx, ref, body.repository, plan.path, files))


def _store_replica(
    ctx: Ctx, ref: str, repository: str, path: str, files: dict[str, tuple[int, str, int | None]]
) -> dict[str, Any]:
    record = resolve_record(ctx, ref, Level.WRITE)
    repo = repository_by_name(ctx, repository)
    size = sum(s for s, _, _ in files.values())
    replica = ctx.session.scalar(
        select(Replica).where(Replica.record_id == record.id, Replica.repository_id == repo.id)
    )
    check_bytes_quota(ctx, repo, record, size, replica.size if replica else 0)
    if replica is None:
        replica = Replica(record_id=record.id, repository_id=repo.id, path=path, size=0, n_files=0)
        ctx.session.add(replica)
        ctx.session.flush()
    else:
        ctx.session.execute(delete(ReplicaFile).where(ReplicaFile.replica_id == replica.id))
    replica.path, replica.size, replica.n_files, replica.verified = path, size, len(files), utcnow()
    if files:
        ctx.session.execute(
            ReplicaFile.__table__.insert(),
            [
                {"replica_id": replica.id, "path": p, "size": s, "sha256": h, "mtime_ns": m}
                for p, (s, h, m) in files.items()
            ],
        )
    _touch(record, repo, size)
    ctx.audit("replica.put", format_id("d", record.id), repository=repo.name, files=len(files), bytes=size)
    return replica_dict(ctx, replica, repo, with_files=False)


def _touch(record: Record, repo: Repository, size: int) -> None:
    record.size = size
    if record.repository_id is None:
        record.repository_id = repo.id
    record.updated = utcnow()


def put_file(
    ctx: Ctx, record: Record, repo: Repository, rel: str, size: int, sha256: str, mtime_ns: int | None = None
) -> Replica:
    """Add or replace one file of the record's replica in ``repo`` (after an upload)."""
    replica = ctx.session.scalar(
        select(Replica).where(Replica.record_id == record.id, Replica.repository_id == repo.id)
    )
    old = ctx.session.get(ReplicaFile, (replica.id, rel)) if replica else None
    check_bytes_quota(ctx, repo, record, size, old.size if old else 0)
    if replica is None:
        replica = Replica(
            record_id=record.id,
            repository_id=repo.id,
            path=default_replica_path(record.id),
            size=0,
            n_files=0,
        )
        ctx.session.add(replica)
        ctx.session.flush()
    if old is None:
        ctx.session.add(
            ReplicaFile(replica_id=replica.id, path=rel, size=size, sha256=sha256, mtime_ns=mtime_ns)
        )
    else:
        old.size, old.sha256, old.mtime_ns = size, sha256, mtime_ns
    ctx.session.flush()
    total, count = ctx.session.execute(
        select(func.coalesce(func.sum(ReplicaFile.size), 0), func.count()).where(
            ReplicaFile.replica_id == replica.id
        )
    ).one()
    replica.size, replica.n_files, replica.verified = int(total), int(count), utcnow()
    _touch(record, repo, int(total))
    ctx.audit("file.put", format_id("d", record.id), path=rel, bytes=size, repository=repo.name)
    return replica


def replica_dict(ctx: Ctx, replica: Replica, repo: Repository, with_files: bool = True) -> dict[str, Any]:
    """JSON form of a replica, optionally with its manifest."""
    out: dict[str, Any] = {
        "record": format_id("d", replica.record_id),
        "repository": repo.name,
        "kind": repo.kind,
        "path": replica.path,
        "size": replica.size,
        "n_files": replica.n_files,
        "verified": replica.verified.isoformat(),
    }
    if with_files:
        out["files"] = [
            {"path": f.path, "size": f.size, "sha256": f.sha256}
            for f in ctx.session.scalars(
                select(ReplicaFile).where(ReplicaFile.replica_id == replica.id).order_by(ReplicaFile.path)
            )
        ]
    return out


def list_replicas(ctx: Ctx, ref: str, with_files: bool = True) -> list[dict[str, Any]]:
    """Every replica of a readable record, with manifests."""
    record = resolve_record(ctx, ref)
    rows = ctx.session.execute(
        select(Replica, Repository)
        .join(Repository, Repository.id == Replica.repository_id)
        .where(Replica.record_id == record.id)
    )
    return [replica_dict(ctx, rep, repo, with_files) for rep, repo in rows]


def file_entry(ctx: Ctx, record: Record, repo: Repository, rel: str) -> tuple[Replica, ReplicaFile]:
    """The replica and manifest entry of one file, or NotFoundError."""
    replica = ctx.session.scalar(
        select(Replica).where(Replica.record_id == record.id, Replica.repository_id == repo.id)
    )
    entry = ctx.session.get(ReplicaFile, (replica.id, rel)) if replica else None
    if replica is None or entry is None:
        raise NotFoundError(f"d/{record.id} has no file {rel!r} in repository {repo.name!r}")
    return replica, entry
