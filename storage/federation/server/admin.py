"""Routes for users, tokens, schemas, projects, repositories, allocations, grants and the audit log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Response

from storage.federation.access import Principal
from storage.federation.api_models import (
    AllocationIn,
    GrantIn,
    MemberIn,
    ProjectIn,
    RepositoryIn,
    SchemaIn,
    UserIn,
)
from storage.federation.auth import DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS
from storage.federation.catalog import Catalog
from storage.federation.catalog import admin as ops
from storage.federation.server.deps import (
    ERRORS,
    TEXT,
    ProjectName,
    RepositoryName,
    SchemaName,
    catalog,
    principal,
)

router = APIRouter(prefix="/api", responses=ERRORS)


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness probe; needs no token."""
    return {"status": "ok"}


@router.get("/whoami")
def whoami(p: Principal = Depends(principal)) -> dict[str, Any]:
    return {"name": p.name, "is_admin": p.is_admin}


@router.post("/users", status_code=201)
def create_user(body: UserIn, p: Principal = Depends(principal), c: Catalog = Depends(catalog)) -> Any:
    return c.write(p, lambda ctx: ops.create_user(ctx, body))


@router.post("/tokens", status_code=201)
def new_token(
    label: str = Query(default="", max_length=128, pattern=TEXT),
    days: float = Query(default=DEFAULT_TOKEN_DAYS, gt=0, le=MAX_TOKEN_DAYS),
    p: Principal = Depends(principal),
    c: Catalog = Depends(catalog),
) -> Any:
    """A new token for the caller, valid ``days`` days; the secret is shown once."""
    return c.write(p, lambda ctx: ops.new_token(ctx, label, days))


@router.get("/tokens")
def list_tokens(p: Principal = Depends(principal), c: Catalog = Depends(catalog)) -> Any:
    return c.read(p, ops.list_tokens)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(
    token_id: int = Path(ge=1, le=2**31 - 1), p: Principal = Depends(principal), c: Catalog = Depends(catalog)
) -> Response:
    c.write(p, lambda ctx: ops.revoke_token(ctx, token_id))
    return Response(status_code=204)


@router.post("/schemas", status_code=201)
def put_schema(body: SchemaIn, p: Principal = Depends(principal), c: Catalog = Depends(catalog)) -> Any:
    return c.write(p, lambda ctx: ops.put_schema(ctx, body))


@router.get("/schemas/{name:path}")
def get_schema(name: SchemaName, p: Principal = Depends(principal), c: Catalog = Depends(catalog)) -> Any:
    return c.read(p, lambda ctx: ops.get_schema(ctx, name))


@router.post("/projects", status_code=201)
def create_project(body: ProjectIn, p: Principal = Depends(principal), c: Catalog = Depends(catalog)) -> Any:
    return c.write(p, lambda ctx: ops.create_project(ctx, body))


@router.post("/projects/{name}/members")
def set_member(
    name: ProjectName, body: MemberIn, p: Principal = Depends(principal), c: Catalog = Depends(catalog)
) -> Any:
    return c.write(p, lambda ctx: ops.set_member(ctx, name, body))


@router.post("/repositories", status_code=201)
def create_repository(
    body: RepositoryIn, p: Principal = Depends(principal), c: Catalog = Depends(catalog)
) -> Any:
    return c.write(p, lambda ctx: ops.create_repository(ctx, body))


@router.get("/repositories")
def list_repositories(p: Principal = Depends(principal), c: Catalog = Depends(catalog)) -> Any:
    return c.read(p, ops.list_repositories)


@router.post("/repositories/{name}/allocations")
def set_allocation(
    name: RepositoryName, body: AllocationIn, p: Principal = Depends(principal), c: Catalog = Depends(catalog)
) -> Any:
    return c.write(p, lambda ctx: ops.set_allocation(ctx, name, body))


@router.post("/grants")
def grant(body: GrantIn, p: Principal = Depends(principal), c: Catalog = Depends(catalog)) -> Any:
    return c.write(p, lambda ctx: ops.grant(ctx, body))


@router.get("/audit")
def audit(
    target: str | None = Query(default=None, max_length=128, pattern=TEXT),
    limit: int = Query(default=100, ge=1, le=1000),
    p: Principal = Depends(principal),
    c: Catalog = Depends(catalog),
) -> Any:
    return c.read(p, lambda ctx: ops.audit_log(ctx, target, limit))
