"""The catalog's schema on PostgreSQL: the migrations produce exactly the models' tables."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from storage.federation.database import Database, include_name
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
