"""The embedded store: a SQLite catalog and a local repository under one directory.

The directory's layout and token file: ``storage.federation.paths``.
``init_store`` creates it (idempotent); ``serve_in_thread`` runs uvicorn inside this process
(for ``scopeflow run`` and tests); ``spawn_server`` runs ``python -m storage.federation serve``
as a subprocess; ``serve`` blocks (the CLI).
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from scopeflow.errors import NotFoundError, ServiceError
from storage.federation.auth import issue_token, token_digest
from storage.federation.catalog.context import Limits
from storage.federation.client import StoreClient
from storage.federation.database import Database, sqlite_url
from storage.federation.identifiers import check_user_name
from storage.federation.models import Allocation, JsonSchemaDoc, Repository, Token, User
from storage.federation.paths import store_paths

#: Name of the local repository every embedded store has.
LOCAL_REPOSITORY = "local"
#: Default quota of the local admin on the local repository: 1 TiB, 10 million records.
DEFAULT_ALLOCATION = (1 << 40, 10_000_000)


def _user_name() -> str:
    try:
        name = getpass.getuser()
        return check_user_name(name)
    except Exception:  # no login name, or one our rules refuse: fall back to a fixed name
        return "scopeflow"


def init_store(
    store_dir: Path | None = None, user: str | None = None, database_url: str | None = None
) -> str:
    """Create or open an embedded store; returns the local admin's token.

    Creates the directory, migrates the catalog, adds the admin user (``user``, default the
    login name), the ``local`` repository with an allocation for that user, and the token file.
    """
    db_file, repo_dir, token_file = store_paths(store_dir)
    # Owner-only: the catalog and the repository hold every user's data, and the store's ACLs
    # mean nothing to another local account that can read the files.
    for directory in (repo_dir.parent, repo_dir):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
    if not database_url:
        os.close(os.open(db_file, os.O_RDWR | os.O_CREAT, 0o600))
        for path in (
            db_file,
            db_file.with_name(db_file.name + "-wal"),
            db_file.with_name(db_file.name + "-shm"),
        ):
            if path.exists():
                os.chmod(path, 0o600)
    db = Database(database_url or sqlite_url(db_file))
    try:
        db.migrate()
        name = check_user_name(user) if user else _user_name()
        existing = token_file.read_text().strip() if token_file.is_file() else None

        def setup(session):  # type: ignore[no-untyped-def]
            admin = session.scalar(select(User).where(User.name == name))
            if admin is None:
                admin = User(name=name, is_admin=True)
                session.add(admin)
                session.flush()
            repo = session.scalar(select(Repository).where(Repository.name == LOCAL_REPOSITORY))
            if repo is None:
                repo = Repository(name=LOCAL_REPOSITORY, kind="local", path=str(repo_dir), title="embedded")
                session.add(repo)
                session.flush()
            alloc = session.scalar(
                select(Allocation).where(Allocation.repository_id == repo.id, Allocation.user_id == admin.id)
            )
            if alloc is None:
                session.add(
                    Allocation(
                        repository_id=repo.id,
                        user_id=admin.id,
                        max_bytes=DEFAULT_ALLOCATION[0],
                        max_records=DEFAULT_ALLOCATION[1],
                    )
                )
            _seed_project_schemas(session, admin)
            if existing and session.scalar(
                select(Token.id).where(
                    Token.token_sha256 == token_digest(existing), Token.user_id == admin.id
                )
            ):
                return existing
            return issue_token(session, admin, label="embedded")

        token = db.write(setup)
    finally:
        db.dispose()
    if token != existing:
        tmp = token_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.replace(tmp, token_file)
    return token


def _seed_project_schemas(session, admin: User) -> None:  # type: ignore[no-untyped-def]
    """Register the schemas the project's own records name (reserved: ``scopeflow/...``)."""
    # The composition root may reach up: the provenance layer owns these bodies.
    from storage.provenance.records import SCHEMAS

    taken = set(session.scalars(select(JsonSchemaDoc.name).where(JsonSchemaDoc.name.in_(SCHEMAS))))
    for name, body in SCHEMAS.items():
        if name not in taken:
            session.add(JsonSchemaDoc(name=name, body=body, owner_id=admin.id))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class RunningStore:
    """A store server started by this process; ``stop()`` ends it."""

    url: str
    token: str
    store_dir: Path
    _stop: object = field(default=None, repr=False)
    database_url: str | None = None  # the catalog's database when not the SQLite file in store_dir

    def client(self):  # type: ignore[no-untyped-def]
        """A ``StoreClient`` for the local admin."""
        return StoreClient(self.url, self.token)

    def stop(self) -> None:
        """Stop the server (thread or subprocess) and wait for it."""
        if callable(self._stop):
            self._stop()
            self._stop = None

    def __enter__(self) -> RunningStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_healthy(url: str, timeout_s: float, alive: object = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(alive) and not alive():
            raise ServiceError(f"the store server at {url} exited during start-up")
        try:
            if httpx.get(f"{url}/api/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise ServiceError(f"the store server at {url} did not answer within {timeout_s:.0f} s")


def serve_in_thread(
    store_dir: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout_s: float = 30.0,
    limits: Limits | None = None,
    database_url: str | None = None,
) -> RunningStore:
    """Start uvicorn on a background thread of this process; returns once it answers.

    ``port`` 0 picks a free one. ``limits``: the store's size limits (default ``Limits()``).
    ``database_url``: the catalog's database (default the SQLite file in ``store_dir``).
    """
    import uvicorn

    from storage.federation.server import build_app

    token = init_store(store_dir, database_url=database_url)
    db_file = store_paths(store_dir)[0]
    app = build_app(database_url or sqlite_url(db_file), migrate=False, limits=limits)
    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name=f"scopeflow-store:{port}", daemon=True)
    thread.start()
    url = f"http://{host}:{port}"
    _wait_healthy(url, timeout_s, alive=thread.is_alive)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)

    return RunningStore(url, token, Path(store_paths(store_dir)[0].parent), stop, database_url)


def spawn_server(
    store_dir: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout_s: float = 60.0,
    database_url: str | None = None,
) -> RunningStore:
    """Start ``python -m storage.federation serve`` as a subprocess; returns once it answers.

    ``database_url``: the catalog's database (default the SQLite file in ``store_dir``).
    """
    token = init_store(store_dir, database_url=database_url)
    root = store_paths(store_dir)[0].parent
    port = port or free_port(host)
    log = open(root / "server.log", "ab")  # noqa: SIM115 - closed in stop()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "storage.federation",
            "serve",
            "--dir",
            str(root),
            "--host",
            host,
            "--port",
            str(port),
            *(["--db", database_url] if database_url else []),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://{host}:{port}"
    try:
        _wait_healthy(url, timeout_s, alive=lambda: proc.poll() is None)
    except ServiceError:
        proc.kill()
        proc.wait()
        log.close()
        raise

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

    return RunningStore(url, token, root, stop, database_url)


def serve(
    store_dir: Path | None = None, host: str = "127.0.0.1", port: int = 8765, database_url: str | None = None
) -> None:
    """Run the store in the foreground until interrupted (``scopeflow store serve``)."""
    import uvicorn

    from storage.federation.server import build_app

    init_store(store_dir, database_url=database_url)
    db_file = store_paths(store_dir)[0]
    if not database_url and not db_file.exists():
        raise NotFoundError(f"no catalog at {db_file}")
    app = build_app(database_url or sqlite_url(db_file), migrate=False)
    uvicorn.run(app, host=host, port=port, log_level="info")
