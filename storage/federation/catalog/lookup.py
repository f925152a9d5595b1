"""Resolution of names and references to rows, with the permission check folded in.

An item the caller cannot read is reported as not found, so its existence does not leak.
"""

from __future__ import annotations

import re

from sqlalchemy import select

from scopeflow.errors import InputError, NotFoundError
from storage.federation.access import Level
from storage.federation.catalog.context import Ctx
from storage.federation.errors import PermissionDeniedError
from storage.federation.identifiers import MAX_ID, parse_ref
from storage.federation.models import Collection, JsonSchemaDoc, Project, Record, Repository, User

_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+/-]{0,63}\Z")


def check_tags(tags: list[str]) -> list[str]:
    """Validate and de-duplicate tags (order kept)."""
    out: list[str] = []
    for tag in tags:
        if not _TAG.match(tag):
            raise InputError(
                f"invalid tag {tag!r}: use 1-64 characters, a letter or digit first, then letters, "
                "digits, '.', '_', ':', '+', '/', '-'"
            )
        if tag not in out:
            out.append(tag)
    return out


def user_by_name(ctx: Ctx, name: str) -> User:
    """The user called ``name``."""
    user = ctx.session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFoundError(f"no user {name!r}")
    return user


def project_by_name(ctx: Ctx, name: str, level: Level = Level.READ) -> Project:
    """The project ``name`` (``p/`` prefix optional), checked for ``level``."""
    name = name.removeprefix("p/")
    project = ctx.session.scalar(select(Project).where(Project.name == name))
    if project is None or ctx.grants.project_level(project) < Level.READ:
        raise NotFoundError(f"no project {name!r}")
    if ctx.grants.project_level(project) < level:
        raise PermissionDeniedError(f"{level.name.lower()} permission on project {name!r} is needed")
    return project


def schema_by_name(ctx: Ctx, name: str) -> JsonSchemaDoc:
    """The registered schema ``name`` (schemas are readable by every user)."""
    doc = ctx.session.scalar(select(JsonSchemaDoc).where(JsonSchemaDoc.name == name))
    if doc is None:
        raise NotFoundError(f"no schema {name!r}; register it first (POST /api/schemas)")
    return doc


def repository_by_name(ctx: Ctx, name: str) -> Repository:
    """The repository ``name``."""
    repo = ctx.session.scalar(select(Repository).where(Repository.name == name))
    if repo is None:
        raise NotFoundError(f"no repository {name!r}")
    return repo


def _owner_id(ctx: Ctx, owner: str | None) -> int:
    return user_by_name(ctx, owner).id if owner else ctx.principal.user_id


def resolve_record(ctx: Ctx, text: str, level: Level = Level.READ) -> Record:
    """The record ``d/<n>``, ``<n>``, ``alias`` or ``user:alias``, checked for ``level``."""
    ref = parse_ref(text, "d")
    if ref.number is not None:
        record = ctx.session.get(Record, ref.number) if ref.number <= MAX_ID else None
    else:
        try:
            owner = _owner_id(ctx, ref.owner)
        except NotFoundError:
            record = None
        else:
            record = ctx.session.scalar(
                select(Record).where(Record.owner_id == owner, Record.alias == ref.alias)
            )
    if record is None:
        raise NotFoundError(f"no record {ref}")
    held = ctx.grants.record_level(ctx.session, record)
    if held < Level.READ:
        raise NotFoundError(f"no record {ref}")
    if held < level:
        raise PermissionDeniedError(f"{level.name.lower()} permission on d/{record.id} is needed")
    return record


def resolve_collection(ctx: Ctx, text: str, level: Level = Level.READ) -> Collection:
    """The collection ``c/<n>``, ``<n>``, ``alias`` or ``user:alias``, checked for ``level``."""
    ref = parse_ref(text, "c")
    if ref.number is not None:
        coll = ctx.session.get(Collection, ref.number) if ref.number <= MAX_ID else None
    else:
        try:
            owner = _owner_id(ctx, ref.owner)
        except NotFoundError:
            coll = None
        else:
            coll = ctx.session.scalar(
                select(Collection).where(Collection.owner_id == owner, Collection.alias == ref.alias)
            )
    if coll is None or ctx.grants.collection_level(coll) < Level.READ:
        raise NotFoundError(f"no collection {ref}")
    if ctx.grants.collection_level(coll) < level:
        raise PermissionDeniedError(f"{level.name.lower()} permission on c/{coll.id} is needed")
    return coll
