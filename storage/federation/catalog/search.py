"""Search over records: criteria from ``SearchIn`` to one SQL query, permission filter included."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    ARRAY,
    Boolean,
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    any_,
    bindparam,
    cast,
    false,
    func,
    literal_column,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy import column as sql_column
from sqlalchemy import table as sql_table
from sqlalchemy.sql import operators

from scopeflow.errors import InputError
from storage.federation.access import Level, Route
from storage.federation.api_models import SearchIn
from storage.federation.catalog.context import Ctx
from storage.federation.catalog.lookup import (
    check_tags,
    project_by_name,
    resolve_collection,
    schema_by_name,
    user_by_name,
)
from storage.federation.catalog.record_json import record_dicts
from storage.federation.database import FTS_TABLE
from storage.federation.identifiers import MAX_ID
from storage.federation.models import Collection, CollectionItem, Record, RecordTag, SharedEntry
from storage.federation.query_language import and_terms, compile_expression, driven_ids, leaf_rows

#: Up to this many matches, a search sorts the matching ids instead of walking an index.
SMALL_RESULT = 2000
#: Index rows counted per criterion to pick the one a search starts from; when the smallest
#: has fewer, every match is collected from it and sorted (cost in proportion to its rows),
#: else the sort order's index is walked.
ESTIMATE_CAP = 20_000

SORT_KEYS = {
    "created": Record.created,
    "updated": Record.updated,
    "title": Record.title,
    "id": Record.id,
    "size": Record.size,
}
_FTS = sql_table(FTS_TABLE, sql_column("rowid"))
_FTS_MATCH = literal_column(FTS_TABLE)
# 18 digits at most: every such id, and every range "12*" expands to, fits a signed 64-bit column.
_ID_PATTERN = re.compile(r"^(d/)?[0-9*?]{1,18}$")


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
        return Record.id == int(digits) if int(digits) <= MAX_ID else false()
    prefix = digits[:-1]
    if digits.endswith("*") and prefix.isdigit():
        # "12*" is 12, 120-129, 1200-1299, ...: index ranges instead of a scan of every id,
        # as far as ids go (bounds past MAX_ID are more than an INTEGER column holds).
        ranges = [Record.id == int(prefix)] if int(prefix) <= MAX_ID else []
        for k in range(1, 19 - len(prefix)):
            lo = int(prefix) * 10**k
            if lo > MAX_ID:
                break
            ranges.append(Record.id.between(lo, min(lo + 10**k - 1, MAX_ID)))
        return or_(*ranges) if ranges else false()
    return cast(Record.id, String).like(_like(digits), escape="\\")


def conditions(ctx: Ctx, q: SearchIn, correlated: bool = False, md: bool = True) -> list[ColumnElement[bool]]:
    """The WHERE conditions of ``q``, the read-permission filter first.

    ``correlated``: metadata terms as per-record probes (for walking one sorted page) rather
    than id sets; both select the same records. ``md=False`` leaves the metadata expression out.
    """
    return _criteria(ctx, q, correlated, md)[0]


def _criteria(
    ctx: Ctx, q: SearchIn, correlated: bool = False, md: bool = True
) -> tuple[list[ColumnElement[bool]], list[Select[Any]]]:
    """``conditions``, and for each criterion an index answers, a select of the record ids it
    admits (a superset of the matches: a search may start from any one of them)."""
    where: list[ColumnElement[bool]] = [ctx.grants.record_filter(Level.READ)]
    drivers: list[Select[Any]] = []

    def on_records(condition: ColumnElement[bool]) -> None:
        where.append(condition)
        drivers.append(select(Record.id).where(condition))

    def among(ids: Select[Any]) -> None:
        where.append(Record.id.in_(ids))
        drivers.append(ids)

    if q.id:
        if not _ID_PATTERN.match(q.id):
            raise InputError(f"id pattern {q.id!r}: use d/<digits> with * or ? wildcards, e.g. d/12*")
        digits = q.id.removeprefix("d/")
        if digits.isdigit() or (digits.endswith("*") and digits[:-1].isdigit()):
            on_records(_id_condition(q.id))  # ranges of the primary key
        else:
            where.append(_id_condition(q.id))  # a pattern over every id: no index to start from
    if q.alias:
        where.append(Record.alias.like(_like(q.alias), escape="\\"))
    if q.text:
        # SQLite's LIKE ignores ASCII case already; ILIKE there would wrap both sides in lower().
        sqlite = ctx.session.get_bind().dialect.name == "sqlite"
        indexed = [w for w in q.text.split() if len(w) >= 3 and not set(w) & set("*?")]
        if sqlite and indexed:
            # Candidates from the trigram index (a superset of the LIKE matches: it folds case
            # beyond ASCII too); the LIKE conditions below still decide.
            phrases = " ".join('"' + w.replace('"', '""') + '"' for w in indexed)
            among(select(_FTS.c.rowid).where(_FTS_MATCH.op("MATCH")(phrases)))
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
        among(select(RecordTag.record_id).where(RecordTag.tag == tag))
    if q.owner:
        owner = user_by_name(ctx, q.owner).id
        on_records(Record.owner_id == owner)
        if owner == ctx.principal.user_id:
            # An owner holds admin on their records (``access``): the permission filter
            # admits every record this criterion does, and costs a records row each to test.
            where[0] = true()
    if q.md_schema:
        on_records(Record.schema_id == schema_by_name(ctx, q.md_schema).id)
    if q.project:
        on_records(Record.project_id == project_by_name(ctx, q.project).id)
    if q.collection:
        coll = resolve_collection(ctx, q.collection)
        among(
            select(CollectionItem.record_id).where(
                CollectionItem.collection_id.in_(_descendants(ctx, coll.id))
            )
        )
    if q.md and md:
        pg = ctx.session.get_bind().dialect.name == "postgresql"
        where.append(compile_expression(q.md, correlated=correlated, fenced=correlated and pg))
    for column, after, before in (
        (Record.created, q.created_after, q.created_before),
        (Record.updated, q.updated_after, q.updated_before),
    ):
        span = [column >= after] if after is not None else []
        span += [column < before] if before is not None else []
        if span:
            where.extend(span)
            drivers.append(select(Record.id).where(*span))
    return where, drivers


def _on_column(condition: ColumnElement[bool], column: Any) -> bool:
    left = getattr(condition, "left", None)
    return left is not None and bool(left.compare(column.expression))


def _capped_counter(ctx: Ctx) -> Callable[..., int]:
    """Counts the rows of a select up to a cap, at most ``ceiling`` (by default
    ``ESTIMATE_CAP``: enough to rank terms)."""

    def count(query: Select[Any], cap: int | None, ceiling: int = ESTIMATE_CAP) -> int:
        limit = ceiling if cap is None else min(cap, ceiling)
        capped = query.limit(limit).subquery()
        return ctx.session.scalar(select(func.count()).select_from(capped)) or 0

    return count


def _counted(ctx: Ctx, queries: list[Select[Any]]) -> tuple[list[int], int]:
    """The rows of each select counted up to ``ESTIMATE_CAP``, and the largest record id, in
    one statement (PostgreSQL): a round trip costs more than counting further than the fewest
    so far (0.7 ms for 4 000 index rows at 1 M records; counting each only as far, in one
    statement of chained ``LIMIT``s, measured no faster: ~2 ms more Python to build), and on a
    loaded host each waits for the database's process to be scheduled (3-8 ms a statement at
    load 8 on 2 cores)."""
    columns = [
        select(func.count()).select_from(q.limit(ESTIMATE_CAP).subquery()).scalar_subquery() for q in queries
    ]
    row = ctx.session.execute(select(*columns, select(func.max(Record.id)).scalar_subquery())).one()
    return [n or 0 for n in row[:-1]], row[-1] or 1


def _matches(ctx: Ctx, q: SearchIn) -> tuple[Select[Any], int | None, bool, bool]:
    """``SELECT records.id`` of every match, in no particular order (a record may come more
    than once from a metadata index: ``.distinct()`` counts each once), an upper
    bound on their number when one below ``ESTIMATE_CAP`` is known and sorting every match
    is expected to cost less than walking the sort order (else None), whether the
    matches are a restricted user's, read within what they may read (sparse in the sort order),
    and whether the select reads ``records`` alone, each record once (its columns may be
    replaced).

    The search starts from the criterion with the fewest index rows (counted up to the
    fewest so far): a metadata term of an expression joined by "and", a tag, the text index,
    an owner, a date range..., or the records a non-admin user may read (their own, their
    projects', granted ones, those of collections granted to them: one index each). When that
    and every metadata term pass ``ESTIMATE_CAP``, a term is read within what the user may read
    (``_readable_matches``: one index range per route).
    """
    where, drivers = _criteria(ctx, q, md=False)
    count = _capped_counter(ctx)
    pg = ctx.session.get_bind().dialect.name == "postgresql"  # see ``driven_ids``'s ``lateral``
    terms = and_terms(q.md) if q.md else []
    candidates: list[tuple[Any, list[Select[Any]]]] = [(t, [leaf_rows(t)]) for t in terms]
    candidates += [([d], [d]) for d in drivers]
    routes = ctx.grants.routes(Level.READ)
    readable = None if routes is None else [route.ids for route in routes]
    if readable is not None:
        candidates.append((readable, readable))
    # PostgreSQL: every count in one statement, each up to ESTIMATE_CAP (``_counted``). SQLite,
    # in the process, pays no round trip: each count stops at the fewest so far, as fewer rows
    # counted are what it saves (a restricted user's tag search: 1 000 rows, not 34 000).
    batch = (
        _counted(ctx, [part for _, selects in candidates for part in selects]) if pg and candidates else None
    )
    rows_of = iter(batch[0] if batch else [])
    ranked: list[tuple[int, int, Any]] = []
    fewest = None
    for i, (driver, selects) in enumerate(candidates):
        if batch:
            parts = sum(next(rows_of) for _ in selects)
            # A union counts as the sum of its parts (an upper bound). A candidate is ranked by
            # its rows up to the fewest so far, as if counted no further (ties go to the first).
            rows = parts if fewest is None else min(parts, fewest)
        else:
            rows = 0
            for part in selects:  # a union counts as the sum of its parts: an upper bound
                rows += count(part, None if fewest is None else fewest - rows)
                if fewest is not None and rows >= fewest:
                    break
        ranked.append((rows, i, driver))
        fewest = rows if fewest is None else min(fewest, rows)
    ranked.sort(key=lambda r: r[:2])
    if ranked and ranked[0][0] < ESTIMATE_CAP:
        # Few rows to start from: every match is found from them (the other criteria checked
        # per row), so their number bounds the matches. Collecting them all costs those rows;
        # walking the sort order meets a match every n / expected records (expected as if the
        # criteria were independent; counts stopped at a cap make it an overestimate of the
        # walk), so the cheaper of the two is taken.
        rows, best = ranked[0][0], ranked[0][2]
        n = batch[1] if batch else ctx.session.scalar(select(func.max(Record.id))) or 1
        expected = rows * math.prod(min(other, n) / n for other, _, _ in ranked[1:])
        bound = rows if rows <= (q.offset + q.limit) * n / max(expected, 1.0) else None
        if q.md and best is readable and terms and routes is not None:
            leaf = next(driver for _, _, driver in ranked if not isinstance(driver, list))
            return _readable_matches(q.md, leaf, routes, _unfiltered(where), pg), bound, True, False
        if q.md:
            scoped = _unfiltered(where) if best is readable else where
            return driven_ids(q.md, best, scoped, lateral=pg), bound, False, False
        if pg and all(part.get_final_froms() == [Record.__table__] for part in best):
            # A condition on ``records`` (an owner, a date range), among ``where`` already: with
            # it alone PostgreSQL reads each match once, where its ``IN`` made it join
            # ``records`` to itself (10 000 own records sorted by title: 50 000 buffers, or
            # one index-only range of ``ix_records_owner_title`` without it). SQLite, which
            # plans without statistics, and the ids of other tables keep the ``IN``.
            return select(Record.id).where(*where), bound, False, True
        ids = union_all(*best).subquery() if len(best) > 1 else best[0].subquery()
        return select(Record.id).where(Record.id.in_(select(ids.c[0])), *where), bound, False, False
    # Many rows from each: the caller takes the first few matches, and the planner's own
    # choice (or the fewest metadata term's range) finds those soonest.
    if q.md:
        leaves = [driver for _, _, driver in ranked if not isinstance(driver, list)]
        if routes is not None and leaves:
            # A restricted user: the fewest term within what they may read, one index range
            # per route. No records row is read for the permission, where the term's whole
            # range reads one per row it holds.
            return _readable_matches(q.md, leaves[0], routes, _unfiltered(where), pg), None, True, False
        if leaves:
            return driven_ids(q.md, leaves[0], where, lateral=pg), None, False, False
        where.append(compile_expression(q.md))
    return select(Record.id).where(*where), None, False, True


def _unfiltered(where: list[ColumnElement[bool]]) -> list[ColumnElement[bool]]:
    """``where`` without the permission filter (its first condition), for a search that starts
    from the ids of ``Grants.routes``: their union is exactly what that filter admits."""
    return where[1:]


def _readable_matches(
    text: str, leaf: Any, routes: list[Route], where: list[ColumnElement[bool]], lateral: bool = False
) -> Select[Any]:
    """``SELECT`` the ids of the records a restricted user may read that match ``text`` and
    ``where`` (without the permission filter: the routes are exactly what it admits; an id may
    come more than once). For an owner or a project, ``leaf``'s index rows within it (one
    range of ``ix_record_md_owner`` or ``ix_record_md_project`` per owner or project), and
    for grants and collection links the same within their holders' copies (``SharedEntry``),
    the other terms probed per row (``lateral``, PostgreSQL: joined within the same scope)."""
    # Every route is one of the two (``Route``): none may be left out.
    assert all((r.on_entry is not None) != bool(r.holders) for r in routes)
    parts = [
        driven_ids(text, leaf, where, scope=r.on_entry, lateral=lateral)
        for r in routes
        if r.on_entry is not None
    ]
    shared = [r for r in routes if r.holders]
    if shared:
        # Grants and collection links: one range of the shared index per holder, all in one
        # part (a record reached by several holders comes once per holder).
        holders = [h for r in shared for h in r.holders]
        level = max(r.level for r in shared)

        def held(e: Any) -> ColumnElement[bool]:
            return and_(e.holder.in_(holders), e.level >= level)

        parts.append(driven_ids(text, leaf, where, scope=held, lateral=lateral, entries=SharedEntry))
    if len(parts) == 1:
        return parts[0]
    return select(union_all(*parts).subquery().c[0])


def _count(ctx: Ctx, matches: Select[Any], cap: int | None) -> int:
    """Rows of ``matches``, counting no further than ``cap + 1`` (None: all)."""
    matches = matches.distinct()
    if cap is not None:
        matches = matches.limit(cap + 1)
    return ctx.session.scalar(select(func.count()).select_from(matches.subquery())) or 0


def search(ctx: Ctx, q: SearchIn) -> dict[str, Any]:
    """One page of matching records: ``{total, total_is_lower_bound, offset, limit, items}``.

    ``total`` counts every match when ``q.count_limit`` is None or there are at most that many;
    past it, counting stops, ``total`` is a lower bound (the larger of ``count_limit`` and what
    the page shows) and ``total_is_lower_bound`` is true. A page shorter than asked for (and
    not past the end) makes the total exact whatever the limit.
    """
    key = q.sort.lstrip("+-")
    if key not in SORT_KEYS:
        raise InputError(
            f"cannot sort by {q.sort!r}: use one of {', '.join(SORT_KEYS)} (prefix '-' for descending)"
        )
    column = SORT_KEYS[key]
    descending = q.sort.startswith("-")
    order = [column.desc(), Record.id.desc()] if descending else [column.asc(), Record.id.asc()]
    matches, bound, sparse, direct = _matches(ctx, q)
    window = (q.offset, min(q.limit, ctx.limits.max_page))
    cap = q.count_limit
    if bound is not None:
        # At most ``bound`` matches (a few thousand at most): sort them all, counted in the
        # same pass, at a cost in proportion to the starting criterion's rows.
        # Only (sort key, id) pairs are sorted; the page's rows are read after.
        counted = (Record.id, func.count().over())
        page = (
            (
                matches.with_only_columns(*counted)
                if direct
                else select(*counted).where(Record.id.in_(matches))
            )
            .order_by(*order)
            .offset(window[0])
            .limit(window[1])
        )
        found = ctx.session.execute(page).all()
        by_id = {
            r.id: r for r in ctx.session.scalars(select(Record).where(Record.id.in_([i for i, _ in found])))
        }
        rows = [by_id[i] for i, _ in found]
        total = found[0][1] if found else _count(ctx, matches, None)
        lower_bound = False
        if cap is not None and total > cap and not (rows and len(rows) < window[1]):
            total, lower_bound = max(cap, q.offset + len(rows)), True
        return _page(ctx, q, total, lower_bound, rows)
    small = SMALL_RESULT if cap is None else min(cap, SMALL_RESULT)
    if sparse:
        # Matches among what a restricted user may read lie far apart in the sort order (the
        # walk below passes every record they may not read: 150 of 160 ms for 761 matches in
        # 1 M records, SQLite), so up to SMALL_RESULT are collected and sorted past the cap too.
        small = SMALL_RESULT
    if sparse and ctx.session.get_bind().dialect.name == "postgresql":
        collected = _sorted_page(ctx, matches, small, order, window)
        if collected is not None:
            total, rows = collected
            lower_bound = False
            if cap is not None and total > cap and not (rows and len(rows) < window[1]):
                total, lower_bound = max(cap, q.offset + len(rows)), True
            return _page(ctx, q, total, lower_bound, rows)
    # Few matches: collect their ids from the indexes and sort just those. Many matches: walk
    # the sort order and probe each record, stopping once the page is full.
    found_ids = ctx.session.scalars(matches.limit(small + 1)).all()
    ids = list(dict.fromkeys(found_ids))
    if len(found_ids) > small >= len(ids):  # repeats filled the limit: count each once
        ids = list(ctx.session.scalars(matches.distinct().limit(small + 1)))
    lower_bound = False
    if len(ids) <= small:
        total = len(ids)
        if cap is not None and total > cap:  # counted past the cap: said as a lower bound
            total, lower_bound = cap, True
        rows = ctx.session.scalars(
            select(Record)
            .where(_among_ids(ctx, ids) if ids else false())
            .order_by(*order)
            .offset(window[0])
            .limit(window[1])
        ).all()
        if lower_bound:
            shown = q.offset + len(rows)
            total, lower_bound = (shown, False) if rows and len(rows) < window[1] else (max(cap, shown), True)
    else:
        # More than ``small`` matches: past a cap no larger than that, counting is done.
        total = small + 1 if cap is not None and cap <= small else _count(ctx, matches, cap)
        if cap is not None and total > cap:
            total, lower_bound = cap, True
        probes = conditions(ctx, q, correlated=True)
        if ctx.session.get_bind().dialect.name == "sqlite":
            # Many records match, so each condition is likely to hold: the planner then walks
            # the sort order's index instead of sorting every match of a filter that has an
            # index of its own (the owner's, say) to show the first few.
            # A range on the sort column itself stays a range of that index.
            probes = [c if _on_column(c, column) else func.likely(c, type_=Boolean) for c in probes]
        walk = select(Record).where(*probes)
        rows = ctx.session.scalars(walk.order_by(*order).offset(window[0]).limit(window[1])).all()
        if lower_bound:
            shown = q.offset + len(rows)
            if rows and len(rows) < window[1]:
                total, lower_bound = shown, False  # the page ran out: that is every match
            else:
                total = max(total, shown)
    return _page(ctx, q, total, lower_bound, rows)


def _sorted_page(
    ctx: Ctx, matches: Select[Any], small: int, order: list[Any], window: tuple[int, int]
) -> tuple[int, list[Record]] | None:
    """Every match (up to ``small``) collected, counted and sorted, and the page read, in one
    statement (PostgreSQL: a ``WITH`` referenced more than once is computed once): the number
    of matches and the page's records, or None when there are more than ``small`` rows of
    matches (a record may come more than once) and the caller decides as before. Where the
    ids travelled to the client and back as an array, this is one round trip fewer and no
    array of up to ``small`` ids to write and parse. Only (sort key, id) pairs are sorted, and
    the page's rows read after: a date sort is answered from the index of record dates by id
    (migration 0010), where reading each match's row cost 1 727 random reads (md_range_nested,
    1 M records)."""
    found = matches.limit(small + 1).cte("found")
    n_rows = select(func.count()).select_from(found).scalar_subquery()
    n_ids = select(func.count(found.c[0].distinct())).scalar_subquery()
    keys = (
        select(*[Record.__table__.c[name] for name in dict.fromkeys(o.element.name for o in order)])
        .where(Record.id.in_(select(found.c[0])))
        .order_by(*order)
        .offset(window[0])
        .limit(window[1])
        .subquery()
    )
    page = (
        select(Record, n_rows, n_ids)
        .join(keys, keys.c.id == Record.id)
        .order_by(*[_on(keys, o) for o in order])
    )
    got = ctx.session.execute(page).all()
    if got:
        rows_n, ids_n = got[0][1], got[0][2]
    else:  # an empty page (no match, or past the last): the counts alone
        rows_n, ids_n = ctx.session.execute(select(n_rows, n_ids)).one()
    if rows_n > small:
        return None
    return ids_n, [r[0] for r in got]


def _on(keys: Any, term: Any) -> Any:
    """``term`` (a sort column, ascending or descending) on the same column of ``keys``."""
    column = keys.c[term.element.name]
    return column.desc() if term.modifier is operators.desc_op else column.asc()


def _among_ids(ctx: Ctx, ids: Sequence[int]) -> ColumnElement[bool]:
    """``records.id`` among ``ids`` (up to ``SMALL_RESULT``). On PostgreSQL as one array
    parameter: psycopg re-parses a statement of that length, one placeholder per id, on every
    execution (~10 ms of Python for 761 ids, a restricted user's md_expression)."""
    if ctx.session.get_bind().dialect.name == "postgresql":
        return Record.id == any_(bindparam("ids", list(ids), type_=ARRAY(Integer)))
    return Record.id.in_(ids)


def _page(ctx: Ctx, q: SearchIn, total: int, lower_bound: bool, rows: Sequence[Record]) -> dict[str, Any]:
    return {
        "total": total,
        "total_is_lower_bound": lower_bound,
        "offset": q.offset,
        "limit": q.limit,
        "items": record_dicts(ctx, rows),
    }
