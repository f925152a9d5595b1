"""The shared records' metadata index under concurrent writers (PostgreSQL, READ COMMITTED): a
grant revoked while another transaction rewrites the record's metadata leaves no copy behind."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from storage.federation.database import Database


@pytest.fixture
def pg_db(postgres_url: str) -> Iterator[Database]:
    """A migrated empty catalog in its own database of the tests' PostgreSQL cluster."""
    server = make_url(postgres_url)
    name = f"shared_{uuid.uuid4().hex[:8]}"
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    db = Database(server.set(database=name).render_as_string(hide_password=False))
    db.migrate()
    yield db
    db.dispose()


def _waiting_on_a_lock(db: Database) -> bool:
    with db.read_engine.connect() as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = :d"
        return bool(conn.execute(text(query), {"d": make_url(db.url).database}).scalar())


@pytest.mark.parametrize("record_first", [True, False], ids=["record-row-first", "metadata-first"])
def test_a_revoke_during_a_metadata_rewrite_leaves_no_copy(pg_db: Database, record_first: bool) -> None:
    setup = [
        "INSERT INTO users (id, name, is_admin, created) VALUES (1, 'ann', false, CURRENT_TIMESTAMP)",
        "INSERT INTO users (id, name, is_admin, created) VALUES (2, 'ben', false, CURRENT_TIMESTAMP)",
        "INSERT INTO records (id, title, description, md, owner_id, size, created, updated)"
        " VALUES (1, 't', '', '{}', 1, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        "INSERT INTO record_md (record_id, owner_id, key, kind, num) VALUES (1, 1, 'a', 'n', 1.0)",
        "INSERT INTO grants (target_kind, target_id, user_id, level) VALUES ('d', 1, 2, 1)",
    ]
    copies = text("SELECT count(*) FROM record_md_shared WHERE holder = 2")
    with pg_db.write_engine.begin() as conn:
        for statement in setup:
            conn.execute(text(statement))
        assert conn.execute(copies).scalar() == 1
    rewrite = pg_db.write_engine.connect()
    transaction = rewrite.begin()
    if record_first:  # as the store's update does when the record's row is flushed first
        rewrite.execute(text("UPDATE records SET title = 'u' WHERE id = 1"))
    rewrite.execute(text("DELETE FROM record_md WHERE record_id = 1"))
    rewrite.execute(
        text("INSERT INTO record_md (record_id, owner_id, key, kind, num) VALUES (1, 1, 'b', 'n', 2.0)")
    )

    def revoke() -> None:
        with pg_db.write_engine.begin() as conn:
            conn.execute(text("DELETE FROM grants WHERE target_kind = 'd' AND target_id = 1"))

    revoking = threading.Thread(target=revoke)
    revoking.start()
    deadline = time.monotonic() + 10
    while not _waiting_on_a_lock(pg_db) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _waiting_on_a_lock(pg_db)  # the revoke waits for the rewrite
    transaction.commit()
    rewrite.close()
    revoking.join(timeout=30)
    with pg_db.read_engine.connect() as conn:
        assert conn.execute(copies).scalar() == 0
