"""Routes for records, search, dependencies, lineage and replicas."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse

from storage.federation.access import Principal
from storage.federation.api_models import DependencyIn, RecordIn, RecordPatch, RecordsIn, ReplicaIn, SearchIn
from storage.federation.catalog import Catalog
from storage.federation.catalog import lineage as lineage_ops
from storage.federation.catalog import records as ops
from storage.federation.catalog import replicas as replica_ops
from storage.federation.catalog import search as search_ops
from storage.federation.server.deps import ERRORS, RecordRef, catalog, principal

router = APIRouter(prefix="/api", responses=ERRORS)


@router.post("/records", status_code=201)
def create_record(body: RecordIn, p: Principal = Depends(principal), c: Catalog = Depends(catalog)) -> Any:
    # Schema validation runs before the write transaction: it holds no lock.
    md = c.read(p, lambda ctx: ops.validate_new(ctx, body))
    return c.write(p, lambda ctx: ops.create_record(ctx, body, md))


@router.post("/records/batch", status_code=201)
def create_records(body: RecordsIn, p: Principal = Depends(principal), c: Catalog = Depends(catalog)) -> Any:
    """Create up to ``max_batch`` records in one transaction: every one or none."""
    md = c.read(p, lambda ctx: ops.validate_many(ctx, body.records))
    return {"items": c.write(p, lambda ctx: ops.create_records(ctx, body.records, md))}


@router.get("/records/{ref}")
def get_record(ref: RecordRef, p: Principal = Depends(principal), c: Catalog = Depends(catalog)) -> Any:
    return c.read(p, lambda ctx: ops.get_record(ctx, ref))


@router.patch("/records/{ref}")
def update_record(
    ref: RecordRef, body: RecordPatch, p: Principal = Depends(principal), c: Catalog = Depends(catalog)
) -> Any:
    md = c.read(p, lambda ctx: ops.validate_patch(ctx, ref, body))
    return c.write(p, lambda ctx: ops.update_record(ctx, ref, body, md))


@router.delete("/records/{ref}", status_code=204)
def delete_record(
    ref: RecordRef, p: Principal = Depends(principal), c: Catalog = Depends(catalog)
) -> Response:
    c.write(p, lambda ctx: ops.delete_record(ctx, ref))
    return Response(status_code=204)


@router.post("/records/{ref}/dependencies")
def add_dependency(
    ref: RecordRef, body: DependencyIn, p: Principal = Depends(principal), c: Catalog = Depends(catalog)
) -> Any:
    return c.write(p, lambda ctx: ops.add_dependency(ctx, ref, body))


@router.get("/records/{ref}/lineage")
def lineage(
    ref: RecordRef,
    depth: int = Query(default=10, ge=0, le=lineage_ops.MAX_DEPTH),
    direction: Literal["up", "down", "both"] = "both",
    p: Principal = Depends(principal),
    c: Catalog = Depends(catalog),
) -> Any:
    return c.read(p, lambda ctx: lineage_ops.lineage(ctx, ref, depth, direction))


@router.get("/records/{ref}/replicas")
def list_replicas(
    ref: RecordRef, files: bool = True, p: Principal = Depends(principal), c: Catalog = Depends(catalog)
) -> Any:
    return c.read(p, lambda ctx: replica_ops.list_replicas(ctx, ref, files))


@router.post("/records/{ref}/replicas", status_code=201)
def add_replica(
    ref: RecordRef, body: ReplicaIn, p: Principal = Depends(principal), c: Catalog = Depends(catalog)
) -> Any:
    return replica_ops.add_replica(c, p, ref, body)


@router.post("/search")
def search(body: SearchIn, p: Principal = Depends(principal), c: Catalog = Depends(catalog)) -> Any:
    """One page of the records the caller may read that match every criterion given.

    Answers ``{total, total_is_lower_bound, offset, limit, items}``. Matches are counted up to
    ``count_limit`` (default 500): when there are more, counting stops, ``total`` is a lower
    bound (at least ``count_limit``, and at least ``offset`` plus the items shown) and
    ``total_is_lower_bound`` is true. ``"count_limit": null`` counts every match, which can
    take long on a large catalog. Only records the caller may read are counted or returned.
    """
    # The page is plain JSON already: skip FastAPI's per-value encoder (7 ms for 50 records).
    return JSONResponse(c.read(p, lambda ctx: search_ops.search(ctx, body)))
