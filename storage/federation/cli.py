"""``scopeflow store …``: the federated store's command line; ``sync_app``: ``scopeflow sync``.

Every command talks to a running store over HTTP (``--url``/``$SCOPEFLOW_STORE_URL``, token from
``--token``/``$SCOPEFLOW_STORE_TOKEN`` or the embedded store's token file), except ``serve`` and
``init``, which work on the store directory. Errors print one line and exit 2 (as every
scopeflow command does).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer

from scopeflow.errors import ScopeflowError

T = TypeVar("T")

app = typer.Typer(help="The federated data store (DataFed-like catalog).", no_args_is_help=True)

DirOpt = typer.Option(None, "--dir", help="Store directory (default $SCOPEFLOW_HOME/store).")
UrlOpt = typer.Option(None, "--url", envvar="SCOPEFLOW_STORE_URL", help="Store URL.", show_envvar=True)
TokenOpt = typer.Option(
    None, "--token", envvar="SCOPEFLOW_STORE_TOKEN", help="Bearer token.", show_envvar=False
)
JsonOpt = typer.Option(False, "--json", help="Print JSON.")


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ScopeflowError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _client(url: str | None, token: str | None, store_dir: Path | None = None) -> Any:
    from storage.federation.client import DEFAULT_URL, StoreClient
    from storage.federation.paths import read_token

    return StoreClient(url or DEFAULT_URL, token or read_token(store_dir))


def _call(url: str | None, token: str | None, fn: Callable[[Any], T]) -> T:
    with _errors(), _client(url, token) as client:
        return fn(client)


def _print(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=False))


def _metadata(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        md = json.loads(raw)
    except json.JSONDecodeError as error:
        typer.secho(f"error: --md is not valid JSON: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    if not isinstance(md, dict):
        typer.secho("error: --md must be a JSON object", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    return md


@app.command()
def serve(
    store_dir: Path | None = DirOpt,
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8765, help="TCP port."),
    db: str | None = typer.Option(
        None, envvar="SCOPEFLOW_STORE_DB", help="Database URL (default SQLite in --dir)."
    ),
) -> None:
    """Run the store server in the foreground (embedded SQLite catalog by default)."""
    from storage.federation.embedded import serve as run

    with _errors():
        run(store_dir, host=host, port=port, database_url=db)


@app.command()
def init(
    store_dir: Path | None = DirOpt, user: str | None = typer.Option(None, help="Admin user name.")
) -> None:
    """Create or open an embedded store; prints where its admin token is."""
    from storage.federation.embedded import init_store
    from storage.federation.paths import store_paths

    with _errors():
        init_store(store_dir, user=user)
    typer.echo(f"store ready; admin token in {store_paths(store_dir)[2]}")


@app.command()
def create(
    title: str,
    alias: str | None = typer.Option(None, help="Short unique name."),
    description: str = typer.Option("", help="Free text."),
    tag: list[str] = typer.Option([], help="Tag (repeatable)."),
    md: str | None = typer.Option(None, help="Metadata as JSON, or @FILE."),
    schema: str | None = typer.Option(None, help="JSON Schema name the metadata must satisfy."),
    dep: list[str] = typer.Option([], help="Dependency KIND:ID, kind der|comp|ver (repeatable)."),
    collection: list[str] = typer.Option([], help="Collection to link into (repeatable)."),
    project: str | None = typer.Option(None, help="Owning project."),
    repo: str | None = typer.Option(None, help="Repository for the data."),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
) -> None:
    """Create a record and print its id."""
    deps = []
    for d in dep:
        kind, sep, target = d.partition(":")
        if not sep or kind not in ("der", "comp", "ver"):
            typer.secho(f"error: --dep {d!r}: write KIND:ID with KIND der, comp or ver", fg="red", err=True)
            raise typer.Exit(2)
        deps.append((kind, target))
    rec = _call(
        url,
        token,
        lambda c: c.create_record(
            title,
            alias=alias,
            description=description,
            tags=tag,
            metadata=_metadata(md),
            md_schema=schema,
            dependencies=deps,
            collections=collection,
            project=project,
            repository=repo,
        ),
    )
    typer.echo(rec["id"])


@app.command()
def get(ref: str, url: str | None = UrlOpt, token: str | None = TokenOpt) -> None:
    """Print a record (JSON)."""
    _print(_call(url, token, lambda c: c.get(ref)))


@app.command()
def search(
    text: str | None = typer.Option(None, help="Words in title or description."),
    id: str | None = typer.Option(None, "--id", help="Id pattern, e.g. 'd/12*'."),
    alias: str | None = typer.Option(None, help="Alias pattern, e.g. 'scan-*'."),
    tag: list[str] = typer.Option([], help="Required tag (repeatable)."),
    owner: str | None = typer.Option(None, help="Owner's user name."),
    schema: str | None = typer.Option(None, help="Schema name."),
    md: str | None = typer.Option(None, help="Metadata expression, e.g. 'md.x > 0.3 and md.y == \"a\"'."),
    after: str | None = typer.Option(None, help="Created at or after (ISO date/time)."),
    before: str | None = typer.Option(None, help="Created before (ISO date/time)."),
    collection: str | None = typer.Option(None, help="Within a collection (and its sub-collections)."),
    sort: str = typer.Option("-created", help="created, updated, title, id or size; '-' for descending."),
    offset: int = typer.Option(0, min=0),
    limit: int = typer.Option(20, min=1, max=1000),
    exact_total: bool = typer.Option(
        False, "--exact-total", help="Count every match (slower); otherwise counting stops at 500."
    ),
    as_json: bool = JsonOpt,
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
) -> None:
    """Search records; prints id, created, owner, title (or JSON)."""
    page = _call(
        url,
        token,
        lambda c: c.search(
            text=text,
            id=id,
            alias=alias,
            tags=tag,
            owner=owner,
            md_schema=schema,
            md=md,
            created_after=after,
            created_before=before,
            collection=collection,
            sort=sort,
            offset=offset,
            limit=limit,
            exact_total=exact_total,
        ),
    )
    if as_json:
        _print(page)
        return
    for item in page["items"]:
        typer.echo(f"{item['id']}\t{item['created'][:19]}\t{item['owner']}\t{item['title']}")
    shown = len(page["items"])
    total = f"at least {page['total']}" if page.get("total_is_lower_bound") else page["total"]
    typer.echo(f"-- {offset + 1 if shown else 0}-{offset + shown} of {total}", err=True)


@app.command()
def lineage(
    ref: str,
    depth: int = typer.Option(10, min=0, max=50, help="Steps from the record."),
    direction: str = typer.Option("both", help="up (sources), down (uses) or both."),
    prov_json: Path | None = typer.Option(
        None, "--prov-json", help="Also write W3C PROV-JSON here ('-': stdout)."
    ),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
) -> None:
    """Print the provenance graph around a record; optionally export PROV-JSON."""
    from storage.provenance import lineage_text, to_prov_json

    graph = _call(url, token, lambda c: c.lineage(ref, depth=depth, direction=direction))
    if prov_json is not None and str(prov_json) == "-":
        _print(to_prov_json(graph))
        return
    typer.echo(lineage_text(graph))
    if prov_json is not None:
        prov_json.write_text(json.dumps(to_prov_json(graph), indent=2))
        typer.echo(f"PROV-JSON written to {prov_json}", err=True)


@app.command("schema-add")
def schema_add(name: str, file: Path, url: str | None = UrlOpt, token: str | None = TokenOpt) -> None:
    """Register a JSON Schema from a file."""
    try:
        body = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        typer.secho(f"error: cannot read schema {file}: {error}", fg="red", err=True)
        raise typer.Exit(2) from None
    _call(url, token, lambda c: c.put_schema(name, body))
    typer.echo(name)


@app.command("collection-create")
def collection_create(
    title: str,
    alias: str | None = typer.Option(None),
    parent: str | None = typer.Option(None, help="Parent collection."),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
) -> None:
    """Create a collection and print its id."""
    typer.echo(_call(url, token, lambda c: c.create_collection(title, alias=alias, parent=parent))["id"])


@app.command()
def link(collection: str, refs: list[str], url: str | None = UrlOpt, token: str | None = TokenOpt) -> None:
    """Link records into a collection."""
    out = _call(url, token, lambda c: c.link(collection, *refs))
    typer.echo(f"{out['id']}: {out['n_records']} records")


@app.command()
def share(
    target: str,
    level: str = typer.Option("read", help="read, write, admin, or none to revoke."),
    user: str | None = typer.Option(None, help="User (default: every user)."),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
) -> None:
    """Grant a permission on a record (d/…), collection (c/…) or project (p/…)."""
    out = _call(url, token, lambda c: c.grant(target, level, user=user))
    typer.echo(f"{out['target']}: {out['user']} {out['level']}")


@app.command("user-add")
def user_add(
    name: str,
    admin: bool = typer.Option(False, "--admin"),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
) -> None:
    """Create a user (store admins only) and print its token."""
    typer.echo(_call(url, token, lambda c: c.create_user(name, is_admin=admin)))


@app.command("repo-add")
def repo_add(
    name: str,
    path: str = typer.Option(..., help="Local directory, or base path on the Globus collection."),
    globus_collection: str | None = typer.Option(
        None, help="Globus collection UUID (makes it a Globus repository)."
    ),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
) -> None:
    """Register a repository (store admins only)."""
    kind = "globus" if globus_collection else "local"
    _call(url, token, lambda c: c.create_repository(name, kind, path, globus_collection=globus_collection))
    typer.echo(name)


@app.command()
def audit(
    target: str | None = typer.Option(None),
    limit: int = typer.Option(50, min=1, max=1000),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
) -> None:
    """Print the newest audit-log entries (store admins only)."""
    for e in _call(url, token, lambda c: c.audit(target, limit)):
        typer.echo(f"{e['at'][:19]}\t{e['user']}\t{e['action']}\t{e['target']}\t{json.dumps(e['detail'])}")


def sync_command(
    path: Path = typer.Argument(..., help="Dataset directory (a Zarr group)."),
    record: str | None = typer.Option(None, help="The dataset's record (default: create one)."),
    repo: str = typer.Option("local", help="Destination repository."),
    max_rate: float | None = typer.Option(None, help="Bandwidth cap, MB/s."),
    verify: str = typer.Option("changed", help="'changed' or 'full' (re-hash every destination file)."),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
) -> None:
    """Sync PATH into a repository; only new or changed files move; a killed sync resumes."""
    from storage.federation.push import push_dataset
    from storage.transfer.local import LocalBackend

    with _errors(), _client(url, token) as client:
        backend = LocalBackend(max_rate=max_rate * 1e6 if max_rate else None, verify=verify)
        result = push_dataset(client, path, record=record, repository=repo, backend=backend)
    r = result.report
    # Say what was checked: under 'changed', files the journal vouches for were compared by
    # size and mtime only, so rot that kept the mtime goes unseen there.
    if verify == "full":
        checked = "every destination file re-hashed (sha256)"
    else:
        unchanged = r.files_total - r.files_sent
        checked = f"{r.files_sent} sent files verified by sha256"
        if unchanged:
            checked += (
                f", {unchanged} unchanged files checked by size and mtime only (--verify full re-hashes)"
            )
    typer.echo(
        f"{result.record}: {r.files_sent}/{r.files_total} files sent, {r.bytes_sent} bytes, "
        f"{r.seconds:.2f} s; replica in {repo!r}: {checked}"
    )


#: A one-command app for ``scopeflow sync``; mount as a command, not a group, so options may
#: follow PATH: ``app.command("sync")(sync_command)``.
sync_app = typer.Typer(help="Push a dataset directory into a store repository (checksum-verified).")
sync_app.command("sync")(sync_command)


def main() -> None:  # pragma: no cover - convenience for ``python -m``
    app(prog_name=os.path.basename(sys.argv[0]))
