"""Allocations: byte and record quotas per user or project on each repository."""

from __future__ import annotations

from sqlalchemy import func, select

from storage.federation.catalog.context import Ctx
from storage.federation.errors import QuotaExceededError
from storage.federation.models import Allocation, Project, Record, Replica, Repository


def allocation_for(ctx: Ctx, repo: Repository, owner_id: int, project: Project | None) -> Allocation | None:
    """The allocation that pays for an item: the project's if it has one, else the owner's."""
    if project is not None:
        alloc = ctx.session.scalar(
            select(Allocation).where(Allocation.repository_id == repo.id, Allocation.project_id == project.id)
        )
        if alloc is not None:
            return alloc
    return ctx.session.scalar(
        select(Allocation).where(
            Allocation.repository_id == repo.id,
            Allocation.user_id == owner_id,
            Allocation.project_id.is_(None),
        )
    )


def _require(ctx: Ctx, repo: Repository, owner_id: int, project: Project | None) -> Allocation | None:
    alloc = allocation_for(ctx, repo, owner_id, project)
    if alloc is None and not ctx.principal.is_admin:
        who = f"project {project.name!r}" if project else "you"
        raise QuotaExceededError(
            f"{who} have no allocation on repository {repo.name!r}; ask a store admin for one"
        )
    return alloc


def usage(ctx: Ctx, alloc: Allocation) -> tuple[int, int]:
    """(bytes, records) used under an allocation."""
    owner = (
        Record.project_id == alloc.project_id
        if alloc.project_id is not None
        else (Record.owner_id == alloc.user_id) & Record.project_id.is_(None)
    )
    used_bytes = ctx.session.scalar(
        select(func.coalesce(func.sum(Replica.size), 0))
        .join(Record, Record.id == Replica.record_id)
        .where(Replica.repository_id == alloc.repository_id, owner)
    )
    used_records = ctx.session.scalar(
        select(func.count()).select_from(Record).where(Record.repository_id == alloc.repository_id, owner)
    )
    return int(used_bytes or 0), int(used_records or 0)


def check_record_quota(
    ctx: Ctx, repo: Repository, project: Project | None, in_use: dict[int, int] | None = None
) -> None:
    """Refuse a new record in ``repo`` past the record quota.

    ``in_use``: records per allocation id counted so far in this write, the ones it adds
    included (for a batch whose records are inserted together after every check); updated.
    """
    alloc = _require(ctx, repo, ctx.principal.user_id, project)
    if alloc is None:
        return
    records = in_use[alloc.id] if in_use is not None and alloc.id in in_use else usage(ctx, alloc)[1]
    if in_use is not None:
        in_use[alloc.id] = records + 1
    if records + 1 > alloc.max_records:
        raise QuotaExceededError(
            f"repository {repo.name!r}: the allocation holds at most {alloc.max_records} records "
            f"and {records} are in use"
        )


def check_bytes_quota(ctx: Ctx, repo: Repository, record: Record, new_bytes: int, old_bytes: int) -> None:
    """Refuse a replica of ``new_bytes`` (replacing ``old_bytes``) past the byte quota."""
    project = ctx.session.get(Project, record.project_id) if record.project_id else None
    alloc = _require(ctx, repo, record.owner_id, project)
    if alloc is None:
        return
    used, _ = usage(ctx, alloc)
    if used - old_bytes + new_bytes > alloc.max_bytes:
        raise QuotaExceededError(
            f"repository {repo.name!r}: {new_bytes} bytes would exceed the allocation of "
            f"{alloc.max_bytes} bytes ({used} in use)"
        )
