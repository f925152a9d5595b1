"""Replicas: which repositories hold a record's bytes, with sha256 per file."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select

from scopeflow.errors import InputError, NotFoundError
from storage.federation.access import Level
from storage.federation.api_models import ReplicaIn
from storage.federation.catalog.context import Ctx
from storage.federation.catalog.lookup import repository_by_name, resolve_record
from storage.federation.catalog.quota import check_bytes_quota
from storage.federation.identifiers import format_id, safe_relative_path
from storage.federation.models import Record, Replica, ReplicaFile, Repository, utcnow


def default_replica_path(record_id: int) -> str:
    """Where a record's data goes inside a repository when the caller names no path."""
    return f"records/{record_id}"


def add_replica(ctx: Ctx, ref: str, body: ReplicaIn) -> dict[str, Any]:
    """Record (or replace) a verified replica; needs write on the record and room in the quota."""
    record = resolve_record(ctx, ref, Level.WRITE)
    repo = repository_by_name(ctx, body.repository)
    path = safe_relative_path(body.path, "replica path")
    files: dict[str, tuple[int, str]] = {}
    for f in body.files:
        rel = safe_relative_path(f.path, "file path")
        if rel in files:
            raise InputError(f"file {rel!r} is listed twice in the replica manifest")
        files[rel] = (f.size, f.sha256)
    size = sum(s for s, _ in files.values())
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
            [{"replica_id": replica.id, "path": p, "size": s, "sha256": h} for p, (s, h) in files.items()],
        )
    _touch(record, repo, size)
    ctx.audit("replica.put", format_id("d", record.id), repository=repo.name, files=len(files), bytes=size)
    return replica_dict(ctx, replica, repo, with_files=False)


def _touch(record: Record, repo: Repository, size: int) -> None:
    record.size = size
    if record.repository_id is None:
        record.repository_id = repo.id
    record.updated = utcnow()


def put_file(ctx: Ctx, record: Record, repo: Repository, rel: str, size: int, sha256: str) -> Replica:
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
        ctx.session.add(ReplicaFile(replica_id=replica.id, path=rel, size=size, sha256=sha256))
    else:
        old.size, old.sha256 = size, sha256
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
