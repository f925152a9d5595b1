"""Migrations on a catalog that has records: 0008 copies their owner and project into the metadata
index, 0011 the shared records' index rows under their grants and links, 0012 frame embeddings'
views (a frame's crops as rows of its own)."""

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


def test_upgrade_copies_shared_records_rows_under_their_grants_and_links(empty_url: str) -> None:
    db = Database(empty_url)
    db.migrate("0010")
    sql = [
        "INSERT INTO users (id, name, is_admin, created) VALUES (1, 'ann', false, CURRENT_TIMESTAMP)",
        "INSERT INTO users (id, name, is_admin, created) VALUES (2, 'ben', false, CURRENT_TIMESTAMP)",
        "INSERT INTO collections (id, title, description, owner_id, created, updated)"
        " VALUES (5, 'c', '', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        *[
            "INSERT INTO records (id, title, description, md, owner_id, size, created, updated)"
            f" VALUES ({rid}, 't', '', '{{}}', 1, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            for rid in (1, 2, 3, 4)
        ],
        *[
            f"INSERT INTO record_md (record_id, owner_id, key, kind, num) VALUES ({rid}, 1, '{key}', 'n', 1.0)"
            for rid in (1, 2, 3, 4)
            for key in ("a", "b")
        ],
        # Record 1 granted to ben, record 2 to everyone, record 3 linked (cap 3), record 4 linked
        # without a cap (passes nothing on) and a grant on a collection (not a record's).
        "INSERT INTO grants (target_kind, target_id, user_id, level) VALUES ('d', 1, 2, 1)",
        "INSERT INTO grants (target_kind, target_id, user_id, level) VALUES ('d', 2, NULL, 2)",
        "INSERT INTO grants (target_kind, target_id, user_id, level) VALUES ('c', 5, 2, 1)",
        "INSERT INTO collection_items (collection_id, record_id, max_level) VALUES (5, 3, 3)",
        "INSERT INTO collection_items (collection_id, record_id, max_level) VALUES (5, 4, 0)",
    ]
    with db.write_engine.begin() as conn:
        for statement in sql:
            conn.execute(text(statement))
    db.migrate()
    copies = "SELECT holder, level, record_id, key FROM record_md_shared ORDER BY record_id, key"
    with db.write_engine.begin() as conn:
        rows = [tuple(r) for r in conn.execute(text(copies))]
        granted, public, linked = [(2, 1, 1)], [(0, 2, 2)], [(-5, 3, 3)]
        assert rows == [(*c, key) for c in granted + public + linked for key in ("a", "b")]
        # The triggers installed by the upgrade follow a revocation and a link's cap.
        conn.execute(text("DELETE FROM grants WHERE target_id = 1 AND target_kind = 'd'"))
        conn.execute(text("UPDATE collection_items SET max_level = 3 WHERE record_id = 4"))
        rows = [tuple(r) for r in conn.execute(text(copies))]
    db.dispose()
    assert [r[2] for r in rows] == [2, 2, 3, 3, 4, 4]


def test_upgrade_keeps_frame_embeddings_as_their_frames_own_view_and_takes_crops(empty_url: str) -> None:
    from sqlalchemy.exc import IntegrityError

    db = Database(empty_url)
    db.migrate("0011")
    with db.write_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, name, is_admin, created) VALUES (1, 'ann', false, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO records (id, title, description, md, owner_id, size, created, updated)"
                " VALUES (1, 't', '', '{}', 1, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text("INSERT INTO frame_embeddings (record_id, embedder, frame, vector) VALUES (1, 'e', 0, :v)"),
            {"v": b"\0" * 8},
        )
    db.migrate()
    insert = (
        "INSERT INTO frame_embeddings (record_id, embedder, frame, view, vector) VALUES (1, 'e', 0, :w, :v)"
    )
    try:
        with db.write_engine.begin() as conn:
            assert [tuple(r) for r in conn.execute(text("SELECT frame, view FROM frame_embeddings"))] == [
                (0, 0)
            ]
            conn.execute(text(insert), {"w": 1, "v": b"\0" * 8})  # a crop of the same frame: its own row
        with pytest.raises(IntegrityError), db.write_engine.begin() as conn:
            conn.execute(text(insert), {"w": 1, "v": b"\0" * 8})  # the same view twice is refused
    finally:
        db.dispose()
