"""Search over records: criteria from ``SearchIn`` to one SQL query, permission filter included."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import ColumnElement, String, cast, false, func, or_, select

from scopeflow.errors import InputError, NotFoundError
from storage.federation.access import Level
from storage.federation.api_models import SearchIn
from storage.federation.catalog.context import Ctx
from storage.federation.catalog.lookup import (
    check_tags,
    project_by_name,
    resolve_collection,
    schema_by_name,
    user_by_name,
)
from storage.federation.catalog.records import record_dicts
from storage.federation.models import Collection, CollectionItem, Record, RecordTag
from storage.federation.query_language import compile_expression

#: Up to this many matches, a search sorts the matching ids instead of walking an index.
SMALL_RESULT = 2000

SORT_KEYS = {
    "created": Record.created,
    "updated": Record.updated,
    "title": Record.title,
    "id": Record.id,
    "size": Record.size,
}
_ID_PATTERN = re.compile(r"^(d/)?[0-9*?]{1,19}$")


def _like(pattern: str) -> str:
    out = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return out.replace("*", "%").replace("?", "_")


def _descendants(ctx: Ctx, root: int) -> list[int]:
    children: dict[int | None, list[int]] = {}
    for cid, parent in ctx.session.execute(select(Collection.id, Collection.parent_id)):
        children.setdefault(parent, []).append(cid)
    out, stack = [], [root]
    while stack:
        cid = stack.pop()
        out.append(cid)
        stack.extend(children.get(cid, []))
    return out


def _id_condition(pattern: str) -> ColumnElement[bool]:
    digits = pattern.removeprefix("d/")
    if digits.isdigit():
        return Record.id == int(digits)
    prefix = digits[:-1]
    if digits.endswith("*") and prefix.isdigit():
        # "12*" is 12, 120-129, 1200-1299, ...: index ranges instead of a scan of every id.
        ranges = [Record.id == int(prefix)]
        for k in range(1, 19 - len(prefix)):
            lo = int(prefix) * 10**k
            ranges.append(Record.id.between(lo, lo + 10**k - 1))
        return or_(*ranges)
    return cast(Record.id, String).like(_like(digits), escape="\\")


def conditions(ctx: Ctx, q: SearchIn, correlated: bool = False) -> list[ColumnElement[bool]]:
    """The WHERE conditions of ``q``, the read-permission filter first.

    ``correlated``: metadata terms as per-record probes (for one sorted page) rather than id
    sets (for counting); both select the same records.
    """
    where: list[ColumnElement[bool]] = [ctx.grants.record_filter(Level.READ)]
    if q.id:
        if not _ID_PATTERN.match(q.id):
            raise InputError(f"id pattern {q.id!r}: use d/<digits> with * or ? wildcards, e.g. d/12*")
        where.append(_id_condition(q.id))
    if q.alias:
        where.append(Record.alias.like(_like(q.alias), escape="\\"))
    if q.text:
        # SQLite's LIKE ignores ASCII case already; ILIKE there would wrap both sides in lower().
        sqlite = ctx.session.get_bind().dialect.name == "sqlite"
        for word in q.text.split():
            pattern = f"%{_like(word)}%"
            if sqlite:
                where.append(
                    Record.title.like(pattern, escape="\\") | Record.description.like(pattern, escape="\\")
                )
            else:
                where.append(
                    Record.title.ilike(pattern, escape="\\") | Record.description.ilike(pattern, escape="\\")
                )
    for tag in check_tags(q.tags):
        where.append(Record.id.in_(select(RecordTag.record_id).where(RecordTag.tag == tag)))
    if q.owner:
        try:
            where.append(Record.owner_id == user_by_name(ctx, q.owner).id)
        except NotFoundError:
            raise InputError(f"owner {q.owner!r}: no such user") from None
    if q.md_schema:
        where.append(Record.schema_id == schema_by_name(ctx, q.md_schema).id)
    if q.project:
        where.append(Record.project_id == project_by_name(ctx, q.project).id)
    if q.collection:
        coll = resolve_collection(ctx, q.collection)
        inside = select(CollectionItem.record_id).where(
            CollectionItem.collection_id.in_(_descendants(ctx, coll.id))
        )
        where.append(Record.id.in_(inside))
    if q.md:
        where.append(compile_expression(q.md, correlated=correlated))
    for column, after, before in (
        (Record.created, q.created_after, q.created_before),
        (Record.updated, q.updated_after, q.updated_before),
    ):
        if after is not None:
            where.append(column >= after)
        if before is not None:
            where.append(column < before)
    return where


def search(ctx: Ctx, q: SearchIn) -> dict[str, Any]:
    """One page of matching records plus the total count: ``{total, offset, limit, items}``."""
    key = q.sort.lstrip("+-")
    if key not in SORT_KEYS:
        raise InputError(
            f"cannot sort by {q.sort!r}: use one of {', '.join(SORT_KEYS)} (prefix '-' for descending)"
        )
    column = SORT_KEYS[key]
    descending = q.sort.startswith("-")
    order = [column.desc(), Record.id.desc()] if descending else [column.asc(), Record.id.asc()]
    by_sets = conditions(ctx, q)
    window = (q.offset, min(q.limit, ctx.limits.max_page))
    # Few matches: collect their ids from the indexes and sort just those. Many matches: walk
    # the sort order and probe each record, stopping once the page is full.
    ids = ctx.session.scalars(select(Record.id).where(*by_sets).limit(SMALL_RESULT + 1)).all()
    if len(ids) <= SMALL_RESULT:
        total = len(ids)
        where: list[ColumnElement[bool]] = [Record.id.in_(ids)] if ids else [false()]
    else:
        total = ctx.session.scalar(select(func.count()).select_from(Record).where(*by_sets)) or 0
        where = conditions(ctx, q, correlated=True)
    rows = ctx.session.scalars(
        select(Record).where(*where).order_by(*order).offset(window[0]).limit(window[1])
    ).all()
    return {"total": total, "offset": q.offset, "limit": q.limit, "items": record_dicts(ctx, rows)}
