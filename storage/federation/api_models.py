"""Request bodies of the HTTP API (pydantic), shared by the server and the catalog layer.

Field limits here produce 422 answers that name the field; limits that need the store's
configuration (metadata bytes) are checked in the catalog.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from storage.federation.identifiers import (
    ALIAS_PATTERN,
    COLLECTION_REF_PATTERN,
    FILE_PATH_PATTERN,
    GRANT_TARGET_PATTERN,
    NAME_PATTERN,
    PROJECT_PATTERN,
    RECORD_REF_PATTERN,
    TAG_PATTERN,
    TEXT_PATTERN,
    USER_PATTERN,
)

DependencyKind = Literal["der", "comp", "ver"]
Tag = Annotated[str, Field(pattern=TAG_PATTERN)]
RecordRef = Annotated[str, Field(max_length=200, pattern=RECORD_REF_PATTERN)]
CollectionRef = Annotated[str, Field(max_length=200, pattern=COLLECTION_REF_PATTERN)]
#: Largest magnitude of a number in stored JSON: inside a 64-bit float's range (the search
#: index holds numbers as floats; past it ``float()`` overflows), and a round integer so that
#: the bound reads the same exact value to every JSON reader (the float maximum does not).
MAX_NUMBER = 10**308
#: The JSON a record's metadata (or a schema body) may hold, stated for the OpenAPI schema
#: (``check_json`` enforces it; the app adds this under components/schemas).
JSON_VALUE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": TEXT_PATTERN},
        {"type": "number", "minimum": -MAX_NUMBER, "maximum": MAX_NUMBER},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
        {
            "type": "object",
            "propertyNames": {"pattern": TEXT_PATTERN},
            "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
        },
    ]
}
Metadata = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"pattern": TEXT_PATTERN},
            "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
        }
    ),
]

#: Deepest nesting of JSON accepted in a body (metadata, schemas), in levels. Metadata is
#: indexed 8 levels deep (``metadata_index.MAX_DEPTH``); 64 leaves room for schemas and
#: unindexed detail while keeping far from the recursion limits of Python, SQLite's JSON
#: functions (1000) and every serialiser on the way back out.
MAX_JSON_DEPTH = 64


def check_json(value: Any, depth: int = 0) -> None:
    """Refuse what JSON stores cannot keep or give back: NaN and infinities, numbers past
    ±1e308 (64-bit floats), NUL characters and lone surrogates in strings or keys, nesting past
    ``MAX_JSON_DEPTH``. Raises ValueError naming the rule (a 400 answer)."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels is refused")
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("NaN and Infinity are not JSON numbers; send null or a finite number")
        if abs(value) > MAX_NUMBER:
            raise ValueError("numbers beyond ±1e308 (the range of 64-bit floats) are refused")
    elif isinstance(value, int):
        if abs(value) > MAX_NUMBER:
            raise ValueError(
                "integers beyond ±1e308 (the range of 64-bit floats) are refused; send the value as a string"
            )
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
    id: str = Field(min_length=1, max_length=200, pattern=RECORD_REF_PATTERN)


class RecordIn(_Body):
    """A new record."""

    title: str = Field(min_length=1, max_length=512, pattern=TEXT_PATTERN)
    alias: str | None = Field(default=None, max_length=64, pattern=ALIAS_PATTERN)
    description: str = Field(default="", max_length=16384, pattern=TEXT_PATTERN)
    tags: list[Tag] = Field(default_factory=list, max_length=64)
    metadata: Metadata = Field(default_factory=dict)
    md_schema: str | None = Field(default=None, max_length=128, pattern=NAME_PATTERN)
    project: str | None = Field(default=None, max_length=130, pattern=PROJECT_PATTERN)
    repository: str | None = Field(default=None, max_length=128, pattern=NAME_PATTERN)
    collections: list[CollectionRef] = Field(default_factory=list, max_length=64)
    dependencies: list[DependencyIn] = Field(default_factory=list, max_length=256)


class RecordsIn(_Body):
    """Many new records, created in one transaction (all or none); at most ``Limits.max_batch``."""

    records: list[RecordIn] = Field(min_length=1)


class RecordPatch(_Body):
    """Changes to a record; fields left out stay as they are."""

    title: str | None = Field(default=None, min_length=1, max_length=512, pattern=TEXT_PATTERN)
    #: "" removes the alias.
    alias: str | None = Field(default=None, max_length=64, pattern=rf"^$|{ALIAS_PATTERN}")
    description: str | None = Field(default=None, max_length=16384, pattern=TEXT_PATTERN)
    tags: list[Tag] | None = Field(default=None, max_length=64)
    metadata: Metadata | None = None
    metadata_mode: Literal["merge", "replace"] = "merge"
    #: "" removes the schema.
    md_schema: str | None = Field(default=None, max_length=128, pattern=rf"^$|{NAME_PATTERN}")


class CollectionIn(_Body):
    """A new collection, optionally inside a parent collection."""

    title: str = Field(min_length=1, max_length=512, pattern=TEXT_PATTERN)
    alias: str | None = Field(default=None, max_length=64, pattern=ALIAS_PATTERN)
    description: str = Field(default="", max_length=16384, pattern=TEXT_PATTERN)
    parent: str | None = Field(default=None, max_length=200, pattern=COLLECTION_REF_PATTERN)
    project: str | None = Field(default=None, max_length=130, pattern=PROJECT_PATTERN)


class LinkIn(_Body):
    """Records to link into (or unlink from) a collection."""

    records: list[RecordRef] = Field(min_length=1, max_length=1000)


#: Matches a search counts by default; past it the total it answers is a lower bound.
COUNT_LIMIT = 500


class SearchIn(_Body):
    """A search; every criterion given must hold. Wildcards ``*`` and ``?`` in ``id``/``alias``."""

    id: str | None = Field(default=None, max_length=20, pattern=r"^(d/)?[0-9*?]{1,18}$")
    alias: str | None = Field(default=None, max_length=200, pattern=TEXT_PATTERN)
    text: str | None = Field(default=None, max_length=500, pattern=TEXT_PATTERN)
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    owner: str | None = Field(default=None, max_length=64, pattern=USER_PATTERN)
    md_schema: str | None = Field(default=None, max_length=128, pattern=NAME_PATTERN)
    project: str | None = Field(default=None, max_length=130, pattern=PROJECT_PATTERN)
    collection: str | None = Field(default=None, max_length=200, pattern=COLLECTION_REF_PATTERN)
    #: The metadata query language (module ``query_language``): a grammar, so its errors
    #: (400, naming the column) are not stated here.
    md: str | None = Field(default=None, max_length=4096, pattern=TEXT_PATTERN)
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

    path: str = Field(min_length=1, max_length=1024, pattern=FILE_PATH_PATTERN)
    size: int = Field(ge=0, le=10**18)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ReplicaIn(_Body):
    """A copy of a record's data in a repository, under the record's folder ``records/<n>``.

    For a local repository the server hashes the files itself; ``files``, when given, must
    agree with what it finds (and names the files that make the replica). Without ``files``
    every file in the folder does.
    """

    repository: str = Field(min_length=1, max_length=128, pattern=NAME_PATTERN)
    path: str = Field(min_length=1, max_length=1024, pattern=FILE_PATH_PATTERN)
    files: list[ReplicaFileIn] | None = Field(default=None, max_length=1_000_000)


class SchemaIn(_Body):
    """A JSON Schema to register under a name."""

    name: str = Field(min_length=1, max_length=128, pattern=NAME_PATTERN)
    body: Metadata


class ProjectIn(_Body):
    """A new project."""

    name: str = Field(min_length=1, max_length=130, pattern=PROJECT_PATTERN)
    title: str = Field(default="", max_length=512, pattern=TEXT_PATTERN)


class MemberIn(_Body):
    """A user's level in a project (``none`` removes the member)."""

    user: str = Field(min_length=1, max_length=64, pattern=USER_PATTERN)
    level: Literal["none", "read", "write", "admin"]


class RepositoryIn(_Body):
    """A repository: a local directory, or a Globus collection id and a base path on it."""

    name: str = Field(min_length=1, max_length=128, pattern=NAME_PATTERN)
    kind: Literal["local", "globus"]
    path: str = Field(min_length=1, max_length=1024, pattern=r"^/[^\x00]*$")
    globus_collection: str | None = Field(default=None, max_length=64, pattern=TEXT_PATTERN)
    title: str = Field(default="", max_length=512, pattern=TEXT_PATTERN)


class AllocationIn(_Body):
    """A quota for one user or one project on a repository."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["user"], "properties": {"user": {"type": "string"}}},
                {"required": ["project"], "properties": {"project": {"type": "string"}}},
            ]
        },
    )

    user: str | None = Field(default=None, max_length=64, pattern=USER_PATTERN)
    project: str | None = Field(default=None, max_length=130, pattern=PROJECT_PATTERN)
    max_bytes: int = Field(ge=0, le=10**18)
    max_records: int = Field(ge=0, le=2**31 - 1)


class GrantIn(_Body):
    """Give ``level`` on a record/collection/project (``d/1``, ``c/2``, ``p/name``) to a user or everyone."""

    target: str = Field(min_length=1, max_length=200, pattern=GRANT_TARGET_PATTERN)
    user: str | None = Field(default=None, max_length=64, pattern=USER_PATTERN)
    level: Literal["none", "read", "write", "admin"]


class UserIn(_Body):
    """A new user account."""

    name: str = Field(min_length=1, max_length=64, pattern=USER_PATTERN)
    is_admin: bool = False
