"""Migration 0008 on a catalog that has records: their owner and project reach the metadata index."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from storage.federation.database import Database, sqlite_url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database, on SQLite or in the tests' PostgreSQL cluster."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "c.db")
    server = make_url(request.getfixturevalue("postgres_url"))
    name = f"m0008_{uuid.uuid4().hex[:8]}"
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


def test_upgrade_copies_each_records_owner_and_project_into_its_metadata_rows(empty_url: str) -> None:
    db = Database(empty_url)
    db.migrate("0007")
    with db.write_engine.begin() as conn:
        for uid, name in ((1, "ann"), (2, "ben")):
            conn.execute(
                text(
                    "INSERT INTO users (id, name, is_admin, created) VALUES (:i, :n, false, CURRENT_TIMESTAMP)"
                ),
                {"i": uid, "n": name},
            )
        conn.execute(
            text(
                "INSERT INTO projects (id, name, title, owner_id, created) VALUES (7, 'p', '', 1, CURRENT_TIMESTAMP)"
            )
        )
        for rid, owner, project in ((1, 1, None), (2, 2, 7), (3, 1, 7)):
            conn.execute(
                text(
                    "INSERT INTO records (id, title, description, md, owner_id, project_id, size, created, updated)"
                    " VALUES (:r, 't', '', '{}', :o, :p, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"r": rid, "o": owner, "p": project},
            )
            for key in ("a", "b"):
                conn.execute(
                    text("INSERT INTO record_md (record_id, key, kind, num) VALUES (:r, :k, 'n', 1.0)"),
                    {"r": rid, "k": key},
                )
    db.migrate()
    with db.write_engine.connect() as conn:
        rows = conn.execute(text("SELECT record_id, owner_id, project_id FROM record_md ORDER BY id")).all()
    db.dispose()
    assert [tuple(r) for r in rows] == [(1, 1, None)] * 2 + [(2, 2, 7)] * 2 + [(3, 1, 7)] * 2
