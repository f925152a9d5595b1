"""The catalog's schema on PostgreSQL: the migrations produce exactly the models' tables."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.orm import Session

from storage.federation.database import Database, include_name
from storage.federation.errors import ConflictError
from storage.federation.models import Base


def test_migrations_match_models_on_postgresql(postgres_url: str) -> None:
    db = Database(postgres_url)
    db.migrate()
    db.migrate()  # idempotent
    with db.write_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": include_name})
        assert compare_metadata(context, Base.metadata) == []
        assert conn.dialect.name == "postgresql"
    db.dispose()


def test_a_write_that_meets_another_transaction_is_retried_and_a_vanished_row_is_a_conflict(
    postgres_url: str,
) -> None:
    """A serialization failure (SQLSTATE 40001, raised by PostgreSQL itself here) reruns the
    transaction; a foreign key to a row deleted meanwhile answers 409, never a 500."""
    db = Database(postgres_url)
    db.migrate()
    attempts = []

    def fails_once(session: Session) -> int:
        attempts.append(1)
        if len(attempts) == 1:
            session.execute(text("DO $$ BEGIN RAISE EXCEPTION 'clash' USING ERRCODE = '40001'; END $$"))
        return len(attempts)

    assert db.write(fails_once) == 2
    with pytest.raises(ConflictError, match="changed while this request was written"):
        db.write(
            lambda s: s.execute(
                text("INSERT INTO collection_items (collection_id, record_id) VALUES (-5, -7)")
            )
        )
    db.dispose()
