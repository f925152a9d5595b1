"""The dependency graph around a record, limited to what the caller may read."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import or_, select

from scopeflow.errors import InputError
from storage.federation.access import Level
from storage.federation.catalog.context import Ctx
from storage.federation.catalog.lookup import resolve_record
from storage.federation.identifiers import format_id
from storage.federation.models import Dependency, Record, User

#: Deepest walk allowed, in edges from the root.
MAX_DEPTH = 50


def lineage(
    ctx: Ctx, ref: str, depth: int = 10, direction: Literal["up", "down", "both"] = "both"
) -> dict[str, Any]:
    """Nodes and typed edges within ``depth`` steps of a record.

    ``up`` follows dependencies (what the record came from), ``down`` dependents (what came
    from it). Records the caller cannot read are left out, with the edges that reach them.
    """
    if not 0 <= depth <= MAX_DEPTH:
        raise InputError(f"depth must be 0..{MAX_DEPTH}, not {depth}")
    if direction not in ("up", "down", "both"):
        raise InputError(f"direction must be up, down or both, not {direction!r}")
    root = resolve_record(ctx, ref)
    readable = ctx.grants.record_filter(Level.READ)
    seen = {root.id}
    frontier = {root.id}
    edges: set[tuple[int, str, int]] = set()
    for _ in range(depth):
        conds = []
        if direction in ("up", "both"):
            conds.append(Dependency.subject_id.in_(frontier))
        if direction in ("down", "both"):
            conds.append(Dependency.object_id.in_(frontier))
        found = ctx.session.execute(
            select(Dependency.subject_id, Dependency.kind, Dependency.object_id).where(or_(*conds))
        ).all()
        candidates = {s for s, _, _ in found} | {o for _, _, o in found}
        allowed = set(ctx.session.scalars(select(Record.id).where(Record.id.in_(candidates), readable)))
        edges.update((s, k, o) for s, k, o in found if s in allowed and o in allowed)
        frontier = allowed - seen
        seen |= allowed
        if not frontier:
            break
    rows = ctx.session.execute(
        select(Record.id, Record.title, Record.alias, Record.created, Record.md, User.name)
        .join(User, User.id == Record.owner_id)
        .where(Record.id.in_(seen))
    )
    nodes = {
        format_id("d", rid): {
            "title": title,
            "alias": alias,
            "owner": owner,
            "created": created.isoformat(),
            "kind": (md or {}).get("kind") if isinstance(md, dict) else None,
        }
        for rid, title, alias, created, md, owner in rows
    }
    return {
        "root": format_id("d", root.id),
        "nodes": nodes,
        "edges": [
            {"subject": format_id("d", s), "kind": k, "object": format_id("d", o)}
            for s, k, o in sorted(edges)
        ],
    }
