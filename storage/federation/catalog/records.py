"""Records: create, read, update, delete and dependencies (their JSON form: ``record_json``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from scopeflow.errors import InputError, ScopeflowError
from storage.federation import json_schemas
from storage.federation.access import Level
from storage.federation.api_models import DependencyIn, RecordIn, RecordPatch
from storage.federation.catalog.context import Ctx
from storage.federation.catalog.lookup import (
    check_tags,
    project_by_name,
    repository_by_name,
    resolve_collection,
    resolve_record,
    schema_by_name,
)
from storage.federation.catalog.quota import check_record_quota
from storage.federation.catalog.record_json import record_dicts
from storage.federation.errors import ConflictError, PayloadTooLargeError
from storage.federation.identifiers import check_alias, format_id
from storage.federation.metadata_index import flatten
from storage.federation.models import (
    AuditEntry,
    CollectionItem,
    Dependency,
    JsonSchemaDoc,
    MetadataEntry,
    Record,
    RecordTag,
    utcnow,
)

T = TypeVar("T")


def _check_metadata(
    ctx: Ctx, md: dict[str, Any], schema: JsonSchemaDoc | None, validated: dict[str, Any] | None = None
) -> None:
    """Size and schema checks. ``validated``: metadata already checked against this schema
    before the write transaction began (schemas never change), so equal metadata is not
    validated again under the write lock."""
    size = len(json.dumps(md, separators=(",", ":")).encode())
    if size > ctx.limits.max_metadata_bytes:
        raise PayloadTooLargeError(
            f"metadata is {size} bytes of JSON; the limit is {ctx.limits.max_metadata_bytes} bytes"
        )
    if schema is not None and md != validated:
        json_schemas.validate(md, schema.body, schema.name)


def validate_new(ctx: Ctx, body: RecordIn) -> dict[str, Any]:
    """Check a new record's metadata against its schema (in a read transaction, before the
    write); returns the metadata checked."""
    schema = schema_by_name(ctx, body.md_schema) if body.md_schema else None
    _check_metadata(ctx, body.metadata, schema)
    return body.metadata


def validate_patch(ctx: Ctx, ref: str, patch: RecordPatch) -> dict[str, Any] | None:
    """Check the metadata ``patch`` would leave on a record (before the write); returns it."""
    if patch.metadata is None and patch.md_schema is None:
        return None
    record = resolve_record(ctx, ref, Level.WRITE)
    md = _patched_metadata(record, patch)
    schema_id = record.schema_id
    if patch.md_schema is not None:
        schema_id = schema_by_name(ctx, patch.md_schema).id if patch.md_schema else None
    schema = ctx.session.get(JsonSchemaDoc, schema_id) if schema_id else None
    _check_metadata(ctx, md, schema)
    return md


def _patched_metadata(record: Record, patch: RecordPatch) -> dict[str, Any]:
    md = dict(record.md or {})
    if patch.metadata is not None:
        md = patch.metadata if patch.metadata_mode == "replace" else {**md, **patch.metadata}
    return md


def _index_metadata(ctx: Ctx, record: Record, md: dict[str, Any], replace: bool) -> None:
    if replace:
        ctx.session.execute(delete(MetadataEntry).where(MetadataEntry.record_id == record.id))
    rows = _md_rows(record.id, record.owner_id, record.project_id, md)
    if rows:
        ctx.session.execute(MetadataEntry.__table__.insert(), rows)


def _md_rows(
    record_id: int, owner_id: int, project_id: int | None, md: dict[str, Any]
) -> list[dict[str, Any]]:
    """The search-index rows (``MetadataEntry``) of one record's metadata (its owner and
    project copied into each: what a user may read is then a range of the index)."""
    return [
        {
            "record_id": record_id,
            "owner_id": owner_id,
            "project_id": project_id,
            "key": k,
            "kind": kind,
            "num": num,
            "text": text,
        }
        for k, kind, num, text in flatten(md)
    ]


def _add_dependency(ctx: Ctx, record: Record, dep: DependencyIn) -> None:
    target = resolve_record(ctx, dep.id, Level.READ)
    if target.id == record.id:
        raise InputError(f"d/{record.id} cannot depend on itself")
    if _reaches(ctx, target.id, record.id):
        raise ConflictError(
            f"d/{record.id} --{dep.kind}--> d/{target.id} would close a cycle: d/{target.id} already "
            f"depends on d/{record.id}"
        )
    exists = ctx.session.get(Dependency, (record.id, target.id, dep.kind))
    if exists is None:
        ctx.session.add(Dependency(subject_id=record.id, object_id=target.id, kind=dep.kind))


def _reaches(ctx: Ctx, start: int, goal: int) -> bool:
    """Whether ``goal`` is among what ``start`` depends on, through any chain of any kind
    (derived from, component of, version of: each is an order, none may loop)."""
    seen, frontier = {start}, {start}
    while frontier:
        if goal in frontier:
            return True
        nxt = set(
            ctx.session.scalars(select(Dependency.object_id).where(Dependency.subject_id.in_(frontier)))
        )
        frontier = nxt - seen
        seen |= nxt
    return False


def flush_unique(ctx: Ctx, what: str) -> None:
    try:
        ctx.session.flush()
    except SAIntegrityError as error:
        if "UNIQUE" in str(error.orig).upper() or "duplicate" in str(error.orig).lower():
            raise ConflictError(f"{what} is already taken") from None
        raise


def create_record(ctx: Ctx, body: RecordIn, validated: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create a record; returns its JSON form. Checks alias, tags, schema, quotas, links.

    ``validated``: what ``validate_new`` returned, when it ran first.
    """
    return _create(ctx, [body], [validated] if validated is not None else None, batch=False)[0]


@contextmanager
def _item(index: int | None) -> Iterator[None]:
    """Re-raise an error of one batch item as the same class, its message naming the item."""
    try:
        yield
    except ScopeflowError as error:
        if index is None:
            raise
        raise type(error)(f"records[{index}]: {error}") from None


def check_batch(ctx: Ctx, bodies: Sequence[RecordIn]) -> None:
    """Refuse a batch over ``Limits.max_batch`` records (413)."""
    if len(bodies) > ctx.limits.max_batch:
        raise PayloadTooLargeError(
            f"{len(bodies)} records in one batch; the limit is {ctx.limits.max_batch} (send several batches)"
        )


def validate_many(ctx: Ctx, bodies: Sequence[RecordIn]) -> list[dict[str, Any]]:
    """``validate_new`` for each record of a batch (before the write)."""
    check_batch(ctx, bodies)
    out = []
    for i, body in enumerate(bodies):
        with _item(i):
            out.append(validate_new(ctx, body))
    return out


def create_records(
    ctx: Ctx, bodies: Sequence[RecordIn], validated: Sequence[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Create every record of a batch, each with the checks of ``create_record``, in the
    caller's transaction: one refused item refuses the batch (its error names the item's index)."""
    check_batch(ctx, bodies)
    return _create(ctx, bodies, validated, batch=True)


class _Lookups:
    """Names resolved once per batch (schema, project, repository, collection)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], Any] = {}

    def get(self, kind: str, name: str, find: Callable[[], T]) -> T:
        if (kind, name) not in self._seen:
            self._seen[kind, name] = find()
        return self._seen[kind, name]


def _create(
    ctx: Ctx, bodies: Sequence[RecordIn], validated: Sequence[dict[str, Any] | None] | None, batch: bool
) -> list[dict[str, Any]]:
    """Records created with one statement per table: every item checked first (each name
    looked up once), then the rows of every item inserted together."""
    seen = _Lookups()
    in_use: dict[int, int] = {}  # records under each allocation, this batch's included
    now = utcnow()
    rows, links = [], []
    for i, body in enumerate(bodies):
        with _item(i if batch else None):
            if body.alias is not None:
                check_alias(body.alias)
            check_tags(body.tags)
            schema = None
            if body.md_schema:
                schema = seen.get("s", body.md_schema, partial(schema_by_name, ctx, body.md_schema))
            _check_metadata(ctx, body.metadata, schema, validated[i] if validated else None)
            project = None
            if body.project:
                project = seen.get(
                    "p", body.project, partial(project_by_name, ctx, body.project, Level.WRITE)
                )
            repo = None
            if body.repository:
                repo = seen.get("r", body.repository, partial(repository_by_name, ctx, body.repository))
                check_record_quota(ctx, repo, project, in_use)
            links.append(
                [seen.get("c", c, partial(resolve_collection, ctx, c, Level.WRITE)) for c in body.collections]
            )
            rows.append(
                {
                    "alias": body.alias,
                    "title": body.title,
                    "description": body.description,
                    "md": body.metadata,
                    "schema_id": schema.id if schema else None,
                    "owner_id": ctx.principal.user_id,
                    "project_id": project.id if project else None,
                    "repository_id": repo.id if repo else None,
                    "size": 0,
                    "created": now,
                    "updated": now,
                }
            )
    _check_aliases(ctx, bodies, batch)
    try:
        inserted = ctx.session.scalars(
            insert(Record).returning(Record.id, sort_by_parameter_order=True), rows
        )
        ids = list(inserted)
    except SAIntegrityError as error:  # an alias taken since the check, by a concurrent writer
        if "UNIQUE" in str(error.orig).upper() or "duplicate" in str(error.orig).lower():
            raise ConflictError("an alias of these records is already taken") from None
        raise
    pairs = list(zip(ids, bodies, strict=True))
    tags = [{"record_id": rid, "tag": t} for rid, body in pairs for t in check_tags(body.tags)]
    md = [
        row
        for rid, values in zip(ids, rows, strict=True)
        for row in _md_rows(rid, values["owner_id"], values["project_id"], values["md"])
    ]
    # The creator owns the record: the link passes the collection's grants on in full.
    items = [
        {"collection_id": c.id, "record_id": rid, "max_level": int(Level.ADMIN)}
        for rid, colls in zip(ids, links, strict=True)
        for c in colls
    ]
    audit = [
        {
            "at": now,
            "user_id": ctx.principal.user_id,
            "action": "record.create",
            "target": format_id("d", rid),
            "detail": {"title": body.title},
        }
        for rid, body in pairs
    ]
    for table, values in (
        (RecordTag.__table__, tags),
        (MetadataEntry.__table__, md),
        (CollectionItem.__table__, items),
        (AuditEntry.__table__, audit),
    ):
        if values:
            ctx.session.execute(table.insert(), values)
    records = list(ctx.session.scalars(select(Record).where(Record.id.in_(ids)).order_by(Record.id)))
    for i, (record, body) in enumerate(zip(records, bodies, strict=True)):
        with _item(i if batch else None):
            for dep in body.dependencies:
                _add_dependency(ctx, record, dep)
    ctx.session.flush()
    return record_dicts(ctx, records)


def _check_aliases(ctx: Ctx, bodies: Sequence[RecordIn], batch: bool) -> None:
    """A clear 409 for an alias taken already, or twice in one batch (naming the item)."""
    aliases = [b.alias for b in bodies if b.alias is not None]
    if not aliases:
        return
    taken = set(
        ctx.session.scalars(
            select(Record.alias).where(Record.owner_id == ctx.principal.user_id, Record.alias.in_(aliases))
        )
    )
    for i, body in enumerate(bodies):
        if body.alias is None:
            continue
        if body.alias in taken:
            with _item(i if batch else None):
                raise ConflictError(f"alias {body.alias!r} is already taken")
        taken.add(body.alias)


def get_record(ctx: Ctx, ref: str) -> dict[str, Any]:
    """The JSON form of a readable record."""
    return record_dicts(ctx, [resolve_record(ctx, ref)], full=True)[0]


def update_record(
    ctx: Ctx, ref: str, patch: RecordPatch, validated: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Apply ``patch`` (metadata merged unless ``metadata_mode='replace'``); needs write.

    ``validated``: what ``validate_patch`` returned, when it ran first.
    """
    record = resolve_record(ctx, ref, Level.WRITE)
    changed: list[str] = []
    if patch.title is not None:
        record.title = patch.title
        changed.append("title")
    if patch.description is not None:
        record.description = patch.description
        changed.append("description")
    if patch.alias is not None:
        record.alias = check_alias(patch.alias) if patch.alias else None
        changed.append("alias")
    if patch.md_schema is not None:
        record.schema_id = schema_by_name(ctx, patch.md_schema).id if patch.md_schema else None
        changed.append("schema")
    if patch.metadata is not None or "schema" in changed:
        md = _patched_metadata(record, patch)
        schema = ctx.session.get(JsonSchemaDoc, record.schema_id) if record.schema_id else None
        _check_metadata(ctx, md, schema, validated)
        record.md = md
        _index_metadata(ctx, record, md, replace=True)
        changed.append("metadata")
    if patch.tags is not None:
        tags = check_tags(patch.tags)
        ctx.session.execute(delete(RecordTag).where(RecordTag.record_id == record.id))
        if tags:
            ctx.session.execute(
                RecordTag.__table__.insert(), [{"record_id": record.id, "tag": t} for t in tags]
            )
        changed.append("tags")
    record.updated = utcnow()
    flush_unique(ctx, f"alias {patch.alias!r}")
    ctx.audit("record.update", format_id("d", record.id), fields=changed)
    return record_dicts(ctx, [record], full=True)[0]


def delete_record(ctx: Ctx, ref: str) -> None:
    """Delete a record and its links, tags, dependencies and replica entries; needs admin."""
    record = resolve_record(ctx, ref, Level.ADMIN)
    rid = format_id("d", record.id)
    ctx.session.delete(record)
    ctx.audit("record.delete", rid, title=record.title)


def add_dependency(ctx: Ctx, ref: str, dep: DependencyIn) -> dict[str, Any]:
    """Add a typed dependency from the record (write needed) to another (read needed)."""
    record = resolve_record(ctx, ref, Level.WRITE)
    _add_dependency(ctx, record, dep)
    record.updated = utcnow()
    ctx.audit("record.dependency", format_id("d", record.id), kind=dep.kind, object=dep.id)
    ctx.session.flush()
    return record_dicts(ctx, [record], full=True)[0]
