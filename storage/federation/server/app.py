"""``build_app``: the FastAPI application of the store, built on demand (never at import)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from scopeflow.errors import ScopeflowError
from storage.federation.api_models import JSON_VALUE_SCHEMA
from storage.federation.catalog import Catalog, Limits
from storage.federation.database import Database
from storage.federation.errors import status_of
from storage.federation.server import admin, collections, files, records, similarity
from storage.federation.server.limits import BodyLimitMiddleware

log = logging.getLogger(__name__)


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        loc = ".".join(str(x) for x in item.get("loc", ()) if x != "body")
        parts.append(f"{loc or 'body'}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)


def build_app(database_url: str, *, limits: Limits | None = None, migrate: bool = True) -> FastAPI:
    """The store's app over the catalog at ``database_url`` (a SQLite file or PostgreSQL URL).

    ``migrate`` brings the schema to the newest revision first. Body limits: ``max_file_bytes``
    for file uploads, ``max_body_bytes`` for everything else.
    """
    limits = limits or Limits()
    db = Database(database_url)
    if migrate:
        db.migrate()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        db.dispose()

    app = FastAPI(title="scopeflow store", version="1", lifespan=lifespan)
    app.state.catalog = Catalog(db, limits)
    for module in (admin, records, collections, files, similarity):
        app.include_router(module.router)

    @app.exception_handler(ScopeflowError)
    async def _ours(_request: Request, error: ScopeflowError) -> JSONResponse:
        status = status_of(error)
        if status >= 500:
            log.error("store error: %s", error)
        return JSONResponse({"error": type(error).__name__, "detail": str(error)}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own refusals (a body that is not JSON, an unknown path) in the store's shape.
        name = {400: "InputError", 404: "NotFoundError", 413: "PayloadTooLargeError"}.get(error.status_code)
        return JSONResponse(
            {"error": name or "HTTPError", "detail": str(error.detail)},
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "InputError", "detail": _validation_message(error)}, status_code=400)

    def limit_for(path: str) -> int:
        return limits.max_file_bytes if "/files/" in path else limits.max_body_bytes

    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)
    app.add_middleware(UnexpectedErrorMiddleware)

    def openapi() -> dict[str, Any]:
        # The metadata and schema bodies refer to JsonValue (recursive): add it once.
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {})["JsonValue"] = JSON_VALUE_SCHEMA
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


class UnexpectedErrorMiddleware:
    """Answers an unexpected exception with a JSON 500 and keeps the connection open.

    Starlette's own handler re-raises after answering, and uvicorn then closes the keep-alive
    connection, so the client's next request fails too. A bug stays a 500 (and is logged).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            if started:
                raise
            log.exception("unexpected error answering %s %s", scope.get("method"), scope.get("path"))
            response = JSONResponse(
                {
                    "error": "InternalError",
                    "detail": f"the store failed unexpectedly ({type(error).__name__})",
                },
                status_code=500,
            )
            await response(scope, receive, send)


def build_app_from_env() -> Any:
    """Factory for ``uvicorn --factory``: reads ``SCOPEFLOW_STORE_DB`` (a SQLAlchemy URL)."""
    import os

    url = os.environ.get("SCOPEFLOW_STORE_DB")
    if not url:
        raise RuntimeError("set SCOPEFLOW_STORE_DB to the catalog's database URL")
    return build_app(url)
