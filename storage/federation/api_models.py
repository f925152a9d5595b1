"""Request bodies of the HTTP API (pydantic), shared by the server and the catalog layer.

Field limits here produce 422 answers that name the field; limits that need the store's
configuration (metadata bytes) are checked in the catalog.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DependencyKind = Literal["der", "comp", "ver"]

#: Deepest nesting of JSON accepted in a body (metadata, schemas), in levels. Metadata is
#: indexed 8 levels deep (``metadata_index.MAX_DEPTH``); 64 leaves room for schemas and
#: unindexed detail while keeping far from the recursion limits of Python, SQLite's JSON
#: functions (1000) and every serialiser on the way back out.
MAX_JSON_DEPTH = 64
#: Integers are kept to the signed 64-bit range: PostgreSQL's jsonb and every reader of the
#: records' JSON agree on those, and the search index holds them as 64-bit floats.
INT_RANGE = (-(2**63), 2**63 - 1)


def check_json(value: Any, depth: int = 0) -> None:
    """Refuse what JSON stores cannot keep or give back: NaN and infinities, integers past 64
    bits, NUL characters and lone surrogates in strings or keys, nesting past
    ``MAX_JSON_DEPTH``. Raises ValueError naming the rule (a 400 answer)."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels is refused")
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("NaN and Infinity are not JSON numbers; send null or a finite number")
    elif isinstance(value, int):
        if not INT_RANGE[0] <= value <= INT_RANGE[1]:
            raise ValueError("integers beyond 64 bits are refused; send the value as a string")
    elif isinstance(value, str):
        _check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(str(key))
            check_json(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            check_json(item, depth + 1)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise ValueError("text with a NUL character is refused")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text with a lone surrogate (not valid Unicode) is refused") from None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        check_json(data)
        return data


class DependencyIn(_Body):
    """An edge from the record to ``id``: der = derived from, comp = component of, ver = version of."""

    kind: DependencyKind
    id: str = Field(min_length=1, max_length=200)


class RecordIn(_Body):
    """A new record."""

    title: str = Field(min_length=1, max_length=512)
    alias: str | None = Field(default=None, max_length=64)
    description: str = Field(default="", max_length=16384)
    tags: list[str] = Field(default_factory=list, max_length=64)
    metadata: dict[str, Any] = Field(default_factory=dict)
    md_schema: str | None = Field(default=None, max_length=128)
    project: str | None = Field(default=None, max_length=128)
    repository: str | None = Field(default=None, max_length=128)
    collections: list[str] = Field(default_factory=list, max_length=64)
    dependencies: list[DependencyIn] = Field(default_factory=list, max_length=256)


class RecordPatch(_Body):
    """Changes to a record; fields left out stay as they are."""

    title: str | None = Field(default=None, min_length=1, max_length=512)
    alias: str | None = Field(default=None, max_length=64)
    description: str | None = Field(default=None, max_length=16384)
    tags: list[str] | None = Field(default=None, max_length=64)
    metadata: dict[str, Any] | None = None
    metadata_mode: Literal["merge", "replace"] = "merge"
    md_schema: str | None = Field(default=None, max_length=128)


class CollectionIn(_Body):
    """A new collection, optionally inside a parent collection."""

    title: str = Field(min_length=1, max_length=512)
    alias: str | None = Field(default=None, max_length=64)
    description: str = Field(default="", max_length=16384)
    parent: str | None = Field(default=None, max_length=200)
    project: str | None = Field(default=None, max_length=128)


class LinkIn(_Body):
    """Records to link into (or unlink from) a collection."""

    records: list[str] = Field(min_length=1, max_length=1000)


#: Matches a search counts by default; past it the total it answers is a lower bound.
COUNT_LIMIT = 500


class SearchIn(_Body):
    """A search; every criterion given must hold. Wildcards ``*`` and ``?`` in ``id``/``alias``."""

    id: str | None = Field(default=None, max_length=20, pattern=r"^(d/)?[0-9*?]{1,18}$")
    alias: str | None = Field(default=None, max_length=200)
    text: str | None = Field(default=None, max_length=500)
    tags: list[str] = Field(default_factory=list, max_length=32)
    owner: str | None = Field(default=None, max_length=64)
    md_schema: str | None = Field(default=None, max_length=128)
    project: str | None = Field(default=None, max_length=128)
    collection: str | None = Field(default=None, max_length=200)
    md: str | None = Field(default=None, max_length=4096)
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None
    updated_after: dt.datetime | None = None
    updated_before: dt.datetime | None = None
    sort: str = Field(default="-created", pattern=r"^[+-]?(created|updated|title|id|size)$")
    offset: int = Field(default=0, ge=0, le=10_000_000)
    limit: int = Field(default=50, ge=1, le=1000)
    #: Count matches up to this many; past it ``total`` is a lower bound and the answer says
    #: ``total_is_lower_bound: true``. None (JSON null) counts every match, which can take a
    #: while for broad searches of a large catalog.
    count_limit: int | None = Field(default=COUNT_LIMIT, ge=0, le=10_000_000)

    @field_validator("created_after", "created_before", "updated_after", "updated_before")
    @classmethod
    def _in_range(cls, value: dt.datetime | None) -> dt.datetime | None:
        # A date at the edge of the calendar cannot be moved to UTC (year 1 at +14:00).
        if value is not None:
            try:
                value.astimezone(dt.UTC) if value.tzinfo else value
            except OverflowError:
                raise ValueError("the date is out of range once moved to UTC") from None
        return value


class ReplicaFileIn(_Body):
    """One file of a replica: path relative to the replica, size in bytes, sha256 hex."""

    path: str = Field(min_length=1, max_length=1024)
    size: int = Field(ge=0, le=2**63 - 1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ReplicaIn(_Body):
    """A copy of a record's data in a repository, under the record's folder ``records/<n>``.

    For a local repository the server hashes the files itself; ``files``, when given, must
    agree with what it finds (and names the files that make the replica). Without ``files``
    every file in the folder does.
    """

    repository: str = Field(min_length=1, max_length=128)
    path: str = Field(min_length=1, max_length=1024)
    files: list[ReplicaFileIn] | None = Field(default=None, max_length=1_000_000)


class SchemaIn(_Body):
    """A JSON Schema to register under a name."""

    name: str = Field(min_length=1, max_length=128)
    body: dict[str, Any]


class ProjectIn(_Body):
    """A new project."""

    name: str = Field(min_length=1, max_length=128)
    title: str = Field(default="", max_length=512)


class MemberIn(_Body):
    """A user's level in a project (``none`` removes the member)."""

    user: str = Field(min_length=1, max_length=64)
    level: Literal["none", "read", "write", "admin"]


class RepositoryIn(_Body):
    """A repository: a local directory, or a Globus collection id and a base path on it."""

    name: str = Field(min_length=1, max_length=128)
    kind: Literal["local", "globus"]
    path: str = Field(min_length=1, max_length=1024)
    globus_collection: str | None = Field(default=None, max_length=64)
    title: str = Field(default="", max_length=512)


class AllocationIn(_Body):
    """A quota for one user or one project on a repository."""

    user: str | None = Field(default=None, max_length=64)
    project: str | None = Field(default=None, max_length=128)
    max_bytes: int = Field(ge=0, le=2**63 - 1)
    max_records: int = Field(ge=0, le=2**31 - 1)


class GrantIn(_Body):
    """Give ``level`` on a record/collection/project (``d/1``, ``c/2``, ``p/name``) to a user or everyone."""

    target: str = Field(min_length=1, max_length=200)
    user: str | None = Field(default=None, max_length=64)
    level: Literal["none", "read", "write", "admin"]


class UserIn(_Body):
    """A new user account."""

    name: str = Field(min_length=1, max_length=64)
    is_admin: bool = False
