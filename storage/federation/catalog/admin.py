"""Users, tokens, projects, repositories, allocations, schemas, grants and the audit log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from scopeflow.errors import InputError, NotFoundError
from storage.federation import json_schemas
from storage.federation.access import Level
from storage.federation.api_models import (
    AllocationIn,
    GrantIn,
    MemberIn,
    ProjectIn,
    RepositoryIn,
    SchemaIn,
    UserIn,
)
from storage.federation.auth import DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS, issue_token, token_digest
from storage.federation.catalog.context import Ctx
from storage.federation.catalog.lookup import (
    project_by_name,
    repository_by_name,
    resolve_collection,
    resolve_record,
    schema_by_name,
    user_by_name,
)
from storage.federation.catalog.quota import usage
from storage.federation.catalog.records import flush_unique
from storage.federation.errors import ConflictError, PermissionDeniedError
from storage.federation.identifiers import check_name, check_user_name, format_id
from storage.federation.models import (
    Allocation,
    AuditEntry,
    Grant,
    JsonSchemaDoc,
    Project,
    ProjectMember,
    Repository,
    Token,
    User,
)


def require_admin(ctx: Ctx, what: str) -> None:
    """Refuse non-admin callers, naming the operation."""
    if not ctx.principal.is_admin:
        raise PermissionDeniedError(f"{what} needs a store admin account")


def create_user(ctx: Ctx, body: UserIn) -> dict[str, Any]:
    """Create a user and a first token (admin only); the token is shown once."""
    require_admin(ctx, "creating users")
    user = User(name=check_user_name(body.name), is_admin=body.is_admin)
    ctx.session.add(user)
    flush_unique(ctx, f"user name {body.name!r}")
    token = issue_token(ctx.session, user, label="first", days=DEFAULT_TOKEN_DAYS)
    ctx.audit("user.create", f"u/{user.name}", is_admin=body.is_admin)
    return {"name": user.name, "is_admin": user.is_admin, "token": token}


def new_token(ctx: Ctx, label: str, days: float = DEFAULT_TOKEN_DAYS) -> dict[str, Any]:
    """Issue another token to the caller, valid ``days`` (at most ``MAX_TOKEN_DAYS``)."""
    if not 0 < days <= MAX_TOKEN_DAYS:
        raise InputError(f"a token lives 0 to {MAX_TOKEN_DAYS} days, not {days}")
    user = ctx.session.get(User, ctx.principal.user_id)
    assert user is not None
    token = issue_token(ctx.session, user, label=label[:128], days=days)
    ctx.session.flush()
    row = ctx.session.scalar(select(Token).where(Token.token_sha256 == token_digest(token)))
    assert row is not None
    ctx.audit("token.create", f"u/{user.name}", label=label[:128], id=row.id)
    return {"name": user.name, "token": token, **_token_dict(row)}


def _token_dict(row: Token) -> dict[str, Any]:
    return {
        "id": row.id,
        "label": row.label,
        "created": row.created.isoformat(),
        "expires": row.expires.isoformat() if row.expires else None,
    }


def list_tokens(ctx: Ctx) -> list[dict[str, Any]]:
    """The caller's tokens (never the secrets: only their ids, labels and times)."""
    rows = ctx.session.scalars(select(Token).where(Token.user_id == ctx.principal.user_id).order_by(Token.id))
    return [_token_dict(r) for r in rows]


def revoke_token(ctx: Ctx, token_id: int) -> None:
    """Revoke one of the caller's tokens (a store admin may revoke anyone's)."""
    row = ctx.session.get(Token, token_id)
    if row is None or (row.user_id != ctx.principal.user_id and not ctx.principal.is_admin):
        raise NotFoundError(f"no token {token_id}")
    ctx.session.delete(row)
    ctx.audit("token.revoke", f"t/{token_id}")


#: Schema names the project itself uses (its provenance records name them): only a store admin
#: registers them (``init_store`` does), so nobody can take one with a body of their own.
RESERVED_SCHEMA_PREFIX = "scopeflow/"


def put_schema(ctx: Ctx, body: SchemaIn) -> dict[str, Any]:
    """Register a JSON Schema under a new name (names are immutable: version them, e.g. x/2).

    Registering the very same body under a taken name again is a no-op; a different body
    under a taken name is a clash (409), never taken for the same schema.
    """
    check_name(body.name, "schema")
    existing = ctx.session.scalar(select(JsonSchemaDoc).where(JsonSchemaDoc.name == body.name))
    if existing is not None:
        if existing.body != body.body:
            raise ConflictError(
                f"schema name {body.name!r} is taken by a different schema; register yours under "
                "another name (names are immutable: version them, e.g. x/2)"
            )
        return {"name": existing.name, "body": existing.body}
    if body.name.startswith(RESERVED_SCHEMA_PREFIX) and not ctx.principal.is_admin:
        raise PermissionDeniedError(
            f"schema names under {RESERVED_SCHEMA_PREFIX!r} are the project's own; a store admin "
            "registers them ('scopeflow store init' does)"
        )
    json_schemas.check_schema(body.body)
    doc = JsonSchemaDoc(name=body.name, body=body.body, owner_id=ctx.principal.user_id)
    ctx.session.add(doc)
    flush_unique(ctx, f"schema name {body.name!r}")
    ctx.audit("schema.create", f"s/{body.name}")
    return {"name": doc.name, "body": doc.body}


def get_schema(ctx: Ctx, name: str) -> dict[str, Any]:
    """A registered schema."""
    doc = schema_by_name(ctx, name)
    return {"name": doc.name, "body": doc.body}


def create_project(ctx: Ctx, body: ProjectIn) -> dict[str, Any]:
    """Create a project owned by the caller."""
    name = check_name(body.name.removeprefix("p/"), "project")
    project = Project(name=name, title=body.title, owner_id=ctx.principal.user_id)
    ctx.session.add(project)
    flush_unique(ctx, f"project name {name!r}")
    ctx.audit("project.create", f"p/{name}")
    return {"id": f"p/{name}", "title": body.title, "owner": ctx.principal.name}


def set_member(ctx: Ctx, project_name: str, body: MemberIn) -> dict[str, Any]:
    """Add, change or remove (level ``none``) a member; needs admin on the project."""
    project = project_by_name(ctx, project_name, Level.ADMIN)
    user = user_by_name(ctx, body.user)
    row = ctx.session.get(ProjectMember, (project.id, user.id))
    if body.level == "none":
        if row is not None:
            ctx.session.delete(row)
    elif row is None:
        ctx.session.add(
            ProjectMember(project_id=project.id, user_id=user.id, level=int(Level.parse(body.level)))
        )
    else:
        row.level = int(Level.parse(body.level))
    ctx.audit("project.member", f"p/{project.name}", user=user.name, level=body.level)
    ctx.session.flush()
    members = ctx.session.execute(
        select(User.name, ProjectMember.level)
        .join(User, User.id == ProjectMember.user_id)
        .where(ProjectMember.project_id == project.id)
    )
    return {"id": f"p/{project.name}", "members": {n: Level(lvl).name.lower() for n, lvl in members}}


def create_repository(ctx: Ctx, body: RepositoryIn) -> dict[str, Any]:
    """Register a repository (admin only). Local paths must be absolute directories."""
    require_admin(ctx, "registering repositories")
    check_name(body.name, "repository")
    if body.kind == "local":
        path = Path(body.path)
        if not path.is_absolute():
            raise InputError(f"a local repository needs an absolute directory, not {body.path!r}")
        path.mkdir(parents=True, exist_ok=True)
    elif not body.globus_collection:
        raise InputError("a globus repository needs globus_collection (the collection's UUID)")
    repo = Repository(
        name=body.name,
        kind=body.kind,
        path=body.path,
        globus_collection=body.globus_collection,
        title=body.title,
    )
    ctx.session.add(repo)
    flush_unique(ctx, f"repository name {body.name!r}")
    ctx.audit("repository.create", f"r/{body.name}", kind=body.kind, path=body.path)
    return repository_dict(repo)


def repository_dict(repo: Repository) -> dict[str, Any]:
    """JSON form of a repository."""
    return {
        "name": repo.name,
        "kind": repo.kind,
        "path": repo.path,
        "globus_collection": repo.globus_collection,
        "title": repo.title,
    }


def list_repositories(ctx: Ctx) -> list[dict[str, Any]]:
    """All repositories (their names and kinds are not secret)."""
    return [repository_dict(r) for r in ctx.session.scalars(select(Repository).order_by(Repository.name))]


def set_allocation(ctx: Ctx, repo_name: str, body: AllocationIn) -> dict[str, Any]:
    """Create or change a quota for a user or a project (admin only)."""
    require_admin(ctx, "setting allocations")
    if (body.user is None) == (body.project is None):
        raise InputError("an allocation belongs to exactly one of user or project")
    repo = repository_by_name(ctx, repo_name)
    user = user_by_name(ctx, body.user) if body.user else None
    project = project_by_name(ctx, body.project) if body.project else None
    user_cond = Allocation.user_id == user.id if user else Allocation.user_id.is_(None)
    project_cond = Allocation.project_id == project.id if project else Allocation.project_id.is_(None)
    alloc = ctx.session.scalar(
        select(Allocation).where(Allocation.repository_id == repo.id, user_cond, project_cond)
    )
    if alloc is None:
        alloc = Allocation(
            repository_id=repo.id,
            user_id=user.id if user else None,
            project_id=project.id if project else None,
        )
        ctx.session.add(alloc)
    alloc.max_bytes, alloc.max_records = body.max_bytes, body.max_records
    ctx.session.flush()
    used_bytes, used_records = usage(ctx, alloc)
    owner = f"u/{user.name}" if user else f"p/{project.name}"  # type: ignore[union-attr]
    ctx.audit(
        "allocation.set",
        f"r/{repo.name}",
        owner=owner,
        max_bytes=body.max_bytes,
        max_records=body.max_records,
    )
    return {
        "repository": repo.name,
        "owner": owner,
        "max_bytes": alloc.max_bytes,
        "max_records": alloc.max_records,
        "used_bytes": used_bytes,
        "used_records": used_records,
    }


def grant(ctx: Ctx, body: GrantIn) -> dict[str, Any]:
    """Give (or with level ``none`` take back) a level on an item; needs admin on the item."""
    if body.target.startswith("p/"):
        project = project_by_name(ctx, body.target, Level.ADMIN)
        kind, target_id, label = "p", project.id, f"p/{project.name}"
    elif body.target.startswith("c/"):
        coll = resolve_collection(ctx, body.target, Level.ADMIN)
        kind, target_id, label = "c", coll.id, format_id("c", coll.id)
    else:
        rec = resolve_record(ctx, body.target, Level.ADMIN)
        kind, target_id, label = "d", rec.id, format_id("d", rec.id)
    user = user_by_name(ctx, body.user) if body.user else None
    uid = user.id if user else None
    ctx.session.execute(
        delete(Grant).where(
            Grant.target_kind == kind,
            Grant.target_id == target_id,
            Grant.user_id == uid if uid is not None else Grant.user_id.is_(None),
        )
    )
    if body.level != "none":
        ctx.session.add(
            Grant(target_kind=kind, target_id=target_id, user_id=uid, level=int(Level.parse(body.level)))
        )
    who = user.name if user else "*"
    ctx.audit("grant", label, user=who, level=body.level)
    ctx.session.flush()
    return {"target": label, "user": who, "level": body.level}


def audit_log(ctx: Ctx, target: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest audit entries (admin only), optionally for one target."""
    require_admin(ctx, "reading the audit log")
    query = select(AuditEntry, User.name).outerjoin(User, User.id == AuditEntry.user_id)
    if target:
        query = query.where(AuditEntry.target == target)
    rows = ctx.session.execute(query.order_by(AuditEntry.id.desc()).limit(min(limit, 1000)))
    return [
        {"at": e.at.isoformat(), "user": name, "action": e.action, "target": e.target, "detail": e.detail}
        for e, name in rows
    ]
