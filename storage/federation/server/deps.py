"""FastAPI dependencies: the catalog of the app and the authenticated principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Path, Query, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from storage.federation.access import Principal
from storage.federation.catalog import Catalog
from storage.federation.identifiers import (
    COLLECTION_REF_PATTERN,
    FILE_PATH_PATTERN,
    NAME_PATTERN,
    PROJECT_PATTERN,
    RECORD_REF_PATTERN,
    TEXT_PATTERN,
)

# Path and query parameters with the rules the store enforces, stated in the OpenAPI schema.
RecordRef = Annotated[str, Path(max_length=200, pattern=RECORD_REF_PATTERN)]
CollectionRef = Annotated[str, Path(max_length=200, pattern=COLLECTION_REF_PATTERN)]
SchemaName = Annotated[str, Path(max_length=128, pattern=NAME_PATTERN)]
ProjectName = Annotated[str, Path(max_length=130, pattern=PROJECT_PATTERN)]
RepositoryName = Annotated[str, Path(max_length=128, pattern=NAME_PATTERN)]
FilePath = Annotated[str, Path(max_length=1024, pattern=FILE_PATH_PATTERN)]
RepositoryQuery = Annotated[str | None, Query(max_length=128, pattern=NAME_PATTERN)]


class ErrorOut(BaseModel):
    """Every error answer: the error class (as the client raises it) and a one-line message."""

    error: str
    detail: str


#: The error answers every route may give, declared so that the schema states them.
ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in (
        (400, "invalid input, with the rule it breaks"),
        (401, "no token, or an unknown, expired or revoked one"),
        (403, "the caller lacks the permission or the quota"),
        (404, "no such item, or one the caller may not read"),
        (409, "a clash with what exists"),
        (413, "a body or file over the store's limit"),
        (422, "metadata that fails its JSON Schema, or an unusable schema"),
    )
}
TEXT = TEXT_PATTERN


def catalog(request: Request) -> Catalog:
    """The catalog the app was built with."""
    return request.app.state.catalog


async def principal(
    request: Request, authorization: str | None = Header(default=None, include_in_schema=False)
) -> Principal:
    """The caller, from the bearer token (401 without a valid one)."""
    cat: Catalog = request.app.state.catalog
    return await run_in_threadpool(cat.principal, authorization)
