"""Routes for the bytes of records held in local repositories: upload and download one file.

Uploads stream to a temporary file inside the repository while their sha256 is computed, and
are renamed into place only after the catalog accepted them (permission, quota), so a refused
or broken-off upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from scopeflow.errors import InputError, NotFoundError, StorageError
from storage.federation.access import Level, Principal
from storage.federation.catalog import Catalog, Ctx
from storage.federation.catalog import replicas as ops
from storage.federation.catalog.lookup import repository_by_name, resolve_record
from storage.federation.errors import ConflictError
from storage.federation.identifiers import safe_relative_path
from storage.federation.models import Replica, Repository
from storage.federation.server.deps import ERRORS, FilePath, RecordRef, RepositoryQuery, catalog, principal

router = APIRouter(prefix="/api/records", responses=ERRORS)

#: Size of the pieces an upload is written in, in bytes.
CHUNK = 1 << 20


@dataclass(frozen=True)
class _Target:
    record_id: int
    repository: str
    root: Path
    final: Path
    sha256: str | None


def _locate(ctx: Ctx, ref: str, rel: str, repo_name: str | None, level: Level) -> _Target:
    record = resolve_record(ctx, ref, level)
    repo: Repository | None
    if repo_name:
        repo = repository_by_name(ctx, repo_name)
    elif record.repository_id:
        repo = ctx.session.get(Repository, record.repository_id)
    else:
        raise ConflictError(f"d/{record.id} has no repository yet; name one with ?repository=NAME")
    assert repo is not None
    if repo.kind != "local":
        raise InputError(
            f"repository {repo.name!r} is a Globus collection; move its data with 'scopeflow sync'"
        )
    replica = ctx.session.query(Replica).filter_by(record_id=record.id, repository_id=repo.id).one_or_none()
    base = replica.path if replica else ops.default_replica_path(record.id)
    root = Path(repo.path).resolve()
    final = root / base / rel
    # The checks on ``rel`` refuse '..'; this also catches a symlink inside the tree, and a
    # replica path recorded before paths were confined to the record's own folder.
    own = root / ops.default_replica_path(record.id)
    if not final.parent.resolve().is_relative_to(own):
        raise InputError(f"file path {rel!r} leaves the folder of d/{record.id}")
    sha = None
    if level == Level.READ:
        sha = ops.file_entry(ctx, record, repo, rel)[1].sha256
    return _Target(record.id, repo.name, root, final, sha)


@router.put("/{ref}/files/{path:path}", status_code=201)
async def put_file(
    ref: RecordRef,
    path: FilePath,
    request: Request,
    repository: RepositoryQuery = None,
    p: Principal = Depends(principal),
    c: Catalog = Depends(catalog),
) -> Any:
    """Upload one file of a record into a local repository (write permission, quota)."""
    rel = safe_relative_path(path, "file path")
    target = await run_in_threadpool(c.read, p, lambda ctx: _locate(ctx, ref, rel, repository, Level.WRITE))
    await run_in_threadpool(_prepare_place, target, rel)
    incoming = target.root / ".incoming"
    incoming.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = incoming / f"{uuid.uuid4().hex}.part"
    digest, size = hashlib.sha256(), 0
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            async for chunk in request.stream():
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        sha = digest.hexdigest()
        # The bytes go into place first and the catalog commits after, so a manifest entry
        # never names a file that is not on disk; a refused commit puts the old file back.
        backup = await run_in_threadpool(_swap_in, tmp, target, rel)
        mtime_ns = target.final.stat(follow_symlinks=False).st_mtime_ns

        def record(ctx: Ctx) -> None:
            rec = resolve_record(ctx, ref, Level.WRITE)
            ops.put_file(ctx, rec, repository_by_name(ctx, target.repository), rel, size, sha, mtime_ns)

        try:
            await run_in_threadpool(c.write, p, record)
        except BaseException:
            _swap_back(backup, target.final)
            raise
        if backup is not None:
            backup.unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)
    return {"record": f"d/{target.record_id}", "path": rel, "size": size, "sha256": sha}


#: Longest file or folder name most file systems take, in bytes (NAME_MAX).
NAME_MAX = 255


def _prepare_place(target: _Target, rel: str) -> None:
    """Make the file's folder and refuse a destination that cannot hold a file, before any
    byte is received: a name too long, a folder or a symlink where the file should go."""
    for part in rel.split("/"):
        if len(os.fsencode(part)) > NAME_MAX:
            raise InputError(f"file path {rel!r}: the name {part[:40]!r}... is over {NAME_MAX} bytes")
    try:
        target.final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConflictError(f"file path {rel!r}: a file of the record stands where a folder should") from None
    except OSError as error:
        raise StorageError(f"cannot store {rel!r} in repository {target.repository!r}: {error}") from error
    if target.final.is_symlink() or target.final.is_dir():
        raise ConflictError(f"file path {rel!r} names a folder of the record, not a file")


def _swap_in(tmp: Path, target: _Target, rel: str) -> Path | None:
    """Move ``tmp`` to the file's place, keeping the old file (returned) until the commit."""
    backup = None
    try:
        if target.final.exists():
            backup = tmp.with_suffix(".old")
            os.link(target.final, backup)
        os.replace(tmp, target.final)
    except OSError as error:
        if backup is not None:
            backup.unlink(missing_ok=True)
        raise StorageError(f"cannot store {rel!r} in repository {target.repository!r}: {error}") from error
    return backup


def _swap_back(backup: Path | None, final: Path) -> None:
    if backup is not None:
        os.replace(backup, final)
    else:
        final.unlink(missing_ok=True)


@router.get("/{ref}/files/{path:path}")
def get_file(
    ref: RecordRef,
    path: FilePath,
    repository: RepositoryQuery = None,
    p: Principal = Depends(principal),
    c: Catalog = Depends(catalog),
) -> FileResponse:
    """Download one file; the manifest's sha256 comes in the ``X-Checksum-Sha256`` header."""
    rel = safe_relative_path(path, "file path")
    target = c.read(p, lambda ctx: _locate(ctx, ref, rel, repository, Level.READ))
    # A symlink planted at the last component would serve whatever it points at.
    if target.final.is_symlink() or not target.final.is_file():
        raise NotFoundError(f"d/{target.record_id}: {rel!r} is in the manifest but missing on disk")
    return FileResponse(target.final, headers={"X-Checksum-Sha256": target.sha256 or ""})
