"""FastAPI dependencies: the catalog of the app and the authenticated principal."""

from __future__ import annotations

from fastapi import Header, Request
from starlette.concurrency import run_in_threadpool

from storage.federation.access import Principal
from storage.federation.catalog import Catalog


def catalog(request: Request) -> Catalog:
    """The catalog the app was built with."""
    return request.app.state.catalog


async def principal(request: Request, authorization: str | None = Header(default=None)) -> Principal:
    """The caller, from the bearer token (401 without a valid one)."""
    cat: Catalog = request.app.state.catalog
    return await run_in_threadpool(cat.principal, authorization)
