"""Collections: a tree of folders; records are linked into any number of them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select

from storage.federation.access import Level
from storage.federation.api_models import CollectionIn, LinkIn
from storage.federation.catalog.context import Ctx
from storage.federation.catalog.lookup import project_by_name, resolve_collection, resolve_record
from storage.federation.catalog.records import flush_unique
from storage.federation.identifiers import check_alias, format_id
from storage.federation.models import Collection, CollectionItem, Grant, Project, Record, User, utcnow


def collection_dict(ctx: Ctx, coll: Collection) -> dict[str, Any]:
    """JSON form of a collection, with its readable sub-collections and its record count."""
    s = ctx.session
    children = s.scalars(
        select(Collection.id).where(Collection.parent_id == coll.id, ctx.grants.collection_filter(Level.READ))
    ).all()
    # Only the records the caller may read are counted: a count leaks that unreadable ones exist.
    n_records = (
        s.scalar(
            select(func.count())
            .select_from(CollectionItem)
            .join(Record, Record.id == CollectionItem.record_id)
            .where(CollectionItem.collection_id == coll.id, ctx.grants.record_filter(Level.READ))
        )
        or 0
    )
    return {
        "id": format_id("c", coll.id),
        "alias": coll.alias,
        "title": coll.title,
        "description": coll.description,
        "parent": format_id("c", coll.parent_id) if coll.parent_id else None,
        "owner": s.scalar(select(User.name).where(User.id == coll.owner_id)),
        "project": s.scalar(select(Project.name).where(Project.id == coll.project_id))
        if coll.project_id
        else None,
        "children": [format_id("c", c) for c in children],
        "n_records": n_records,
        "created": coll.created.isoformat(),
        "updated": coll.updated.isoformat(),
    }


def create_collection(ctx: Ctx, body: CollectionIn) -> dict[str, Any]:
    """Create a collection (write permission on the parent and the project, when given)."""
    if body.alias is not None:
        check_alias(body.alias)
    parent = resolve_collection(ctx, body.parent, Level.WRITE) if body.parent else None
    project = project_by_name(ctx, body.project, Level.WRITE) if body.project else None
    now = utcnow()
    coll = Collection(
        alias=body.alias,
        title=body.title,
        description=body.description,
        parent_id=parent.id if parent else None,
        owner_id=ctx.principal.user_id,
        project_id=project.id if project else None,
        created=now,
        updated=now,
    )
    ctx.session.add(coll)
    flush_unique(ctx, f"collection alias {body.alias!r}")
    ctx.audit("collection.create", format_id("c", coll.id), title=body.title)
    ctx._grants = None  # the new collection changes what the caller holds
    return collection_dict(ctx, coll)


def get_collection(ctx: Ctx, ref: str) -> dict[str, Any]:
    """JSON form of a readable collection."""
    return collection_dict(ctx, resolve_collection(ctx, ref))


def link(ctx: Ctx, ref: str, body: LinkIn, unlink: bool = False) -> dict[str, Any]:
    """Link records into a collection (or unlink them); write on the collection, read on each record.

    A link passes the collection's grants on to the record only when the linker holds admin on
    the record (see ``link_cap``).
    """
    coll = resolve_collection(ctx, ref, Level.WRITE)
    records = [resolve_record(ctx, r, Level.READ) for r in body.records]
    for rec in records:
        exists = ctx.session.get(CollectionItem, (coll.id, rec.id))
        if unlink and exists is not None:
            ctx.session.delete(exists)
        elif not unlink:
            cap = link_cap(ctx, rec)
            if exists is None:
                ctx.session.add(CollectionItem(collection_id=coll.id, record_id=rec.id, max_level=cap))
            else:
                exists.max_level = max(exists.max_level, cap)
    coll.updated = utcnow()
    ctx.audit(
        "collection.unlink" if unlink else "collection.link",
        format_id("c", coll.id),
        records=[format_id("d", r.id) for r in records],
    )
    ctx.session.flush()
    return collection_dict(ctx, coll)


def link_cap(ctx: Ctx, record: Record) -> int:
    """The most a collection may pass on to ``record`` when the caller links it: admin when the
    caller holds admin on the record (who could grant any level directly), else nothing, so
    that linking never widens anybody's rights."""
    held = ctx.grants.record_level(ctx.session, record)
    return int(Level.ADMIN) if held >= Level.ADMIN else 0


def delete_collection(ctx: Ctx, ref: str) -> None:
    """Delete a collection and its sub-collections (records stay; only links go); needs admin."""
    coll = resolve_collection(ctx, ref, Level.ADMIN)
    cid = format_id("c", coll.id)
    ctx.session.execute(delete(Grant).where(Grant.target_kind == "c", Grant.target_id == coll.id))
    ctx.session.delete(coll)
    ctx.audit("collection.delete", cid, title=coll.title)
