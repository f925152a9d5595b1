"""Where an embedded store keeps its parts, and its local admin token.

Layout of a store directory (default ``scopeflow.config.default_store_dir()``)::

    catalog.db   the SQLite catalog (WAL mode)
    repo/        the local repository "local"
    token        the bearer token of the local admin user (mode 0600)

Apart from ``embedded`` (which creates the directory) because the client reads the token
too, and the client must not import the server's side.
"""

from __future__ import annotations

from pathlib import Path

from scopeflow.config import default_store_dir


def store_paths(store_dir: Path | None) -> tuple[Path, Path, Path]:
    """(catalog file, repository directory, token file) of a store directory."""
    root = Path(store_dir or default_store_dir()).resolve()
    return root / "catalog.db", root / "repo", root / "token"


def read_token(store_dir: Path | None = None) -> str | None:
    """The local admin token of an embedded store, or None without one."""
    token_file = store_paths(store_dir)[2]
    return token_file.read_text().strip() if token_file.is_file() else None
