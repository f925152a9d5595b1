"""Routes for collections."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from storage.federation.access import Principal
from storage.federation.api_models import CollectionIn, LinkIn
from storage.federation.catalog import Catalog
from storage.federation.catalog import collections as ops
from storage.federation.server.deps import ERRORS, CollectionRef, catalog, principal

router = APIRouter(prefix="/api/collections", responses=ERRORS)


@router.post("", status_code=201)
def create_collection(
    body: CollectionIn, p: Principal = Depends(principal), c: Catalog = Depends(catalog)
) -> Any:
    return c.write(p, lambda ctx: ops.create_collection(ctx, body))


@router.get("/{ref}")
def get_collection(
    ref: CollectionRef, p: Principal = Depends(principal), c: Catalog = Depends(catalog)
) -> Any:
    return c.read(p, lambda ctx: ops.get_collection(ctx, ref))


@router.delete("/{ref}", status_code=204)
def delete_collection(
    ref: CollectionRef, p: Principal = Depends(principal), c: Catalog = Depends(catalog)
) -> Response:
    c.write(p, lambda ctx: ops.delete_collection(ctx, ref))
    return Response(status_code=204)


@router.post("/{ref}/link")
def link(
    ref: CollectionRef, body: LinkIn, p: Principal = Depends(principal), c: Catalog = Depends(catalog)
) -> Any:
    return c.write(p, lambda ctx: ops.link(ctx, ref, body))


@router.post("/{ref}/unlink")
def unlink(
    ref: CollectionRef, body: LinkIn, p: Principal = Depends(principal), c: Catalog = Depends(catalog)
) -> Any:
    return c.write(p, lambda ctx: ops.link(ctx, ref, body, unlink=True))
