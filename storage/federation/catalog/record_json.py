"""A record's JSON form, as the API returns it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import literal, select, union_all

from storage.federation.access import Level
from storage.federation.catalog.context import Ctx
from storage.federation.identifiers import format_id
from storage.federation.models import (
    Collection,
    CollectionItem,
    Dependency,
    JsonSchemaDoc,
    Project,
    Record,
    RecordTag,
    Replica,
    Repository,
    User,
)


def record_dicts(ctx: Ctx, records: Sequence[Record], full: bool = False) -> list[dict[str, Any]]:
    """JSON forms of ``records`` with few queries (tags and names in one, not one per record).

    ``full`` adds collections, dependencies and replicas.
    """
    if not records:
        return []
    ids = [r.id for r in records]
    # Tags and the names of owners, projects, schemas and repositories in one statement: a
    # round trip costs more than these few index reads (on a loaded PostgreSQL host, each
    # waits for its backend to be scheduled).
    named = {
        "u": (User, {r.owner_id for r in records}),
        "s": (JsonSchemaDoc, {r.schema_id for r in records if r.schema_id}),
        "p": (Project, {r.project_id for r in records if r.project_id}),
        "r": (Repository, {r.repository_id for r in records if r.repository_id}),
    }
    parts = [select(literal("t"), RecordTag.record_id, RecordTag.tag).where(RecordTag.record_id.in_(ids))]
    parts += [
        select(literal(kind), table.id, table.name).where(table.id.in_(wanted))
        for kind, (table, wanted) in named.items()
        if wanted
    ]
    tags: dict[int, list[str]] = {i: [] for i in ids}
    names: dict[str, dict[int, str]] = {kind: {} for kind in named}
    for kind, key, name in ctx.session.execute(union_all(*parts)):
        if kind == "t":
            tags[key].append(name)
        else:
            names[kind][key] = name
    users, schemas, projects, repos = names["u"], names["s"], names["p"], names["r"]
    s = ctx.session
    out = []
    for r in records:
        item: dict[str, Any] = {
            "id": format_id("d", r.id),
            "alias": r.alias,
            "title": r.title,
            "description": r.description,
            "tags": sorted(tags[r.id]),
            "metadata": r.md or {},
            "md_schema": schemas.get(r.schema_id) if r.schema_id else None,
            "owner": users.get(r.owner_id),
            "project": projects.get(r.project_id) if r.project_id else None,
            "repository": repos.get(r.repository_id) if r.repository_id else None,
            "size": r.size,
            "created": r.created.isoformat(),
            "updated": r.updated.isoformat(),
        }
        out.append(item)
    if full:
        # Only the collections and dependencies the caller may read are named: an id is
        # enough to learn that something exists.
        readable_colls = ctx.grants.collection_filter(Level.READ)
        readable_recs = ctx.grants.record_filter(Level.READ)
        for item, r in zip(out, records, strict=True):
            item["access"] = ctx.grants.record_level(s, r).name.lower()
            item["collections"] = [
                format_id("c", cid)
                for cid in s.scalars(
                    select(CollectionItem.collection_id)
                    .join(Collection, Collection.id == CollectionItem.collection_id)
                    .where(CollectionItem.record_id == r.id, readable_colls)
                )
            ]
            item["dependencies"] = [
                {"kind": kind, "id": format_id("d", obj)}
                for obj, kind in s.execute(
                    select(Dependency.object_id, Dependency.kind)
                    .join(Record, Record.id == Dependency.object_id)
                    .where(Dependency.subject_id == r.id, readable_recs)
                )
            ]
            item["replicas"] = [
                {
                    "repository": name,
                    "path": rep.path,
                    "size": rep.size,
                    "n_files": rep.n_files,
                    "verified": rep.verified.isoformat(),
                }
                for rep, name in s.execute(
                    select(Replica, Repository.name)
                    .join(Repository, Repository.id == Replica.repository_id)
                    .where(Replica.record_id == r.id)
                )
            ]
    return out
