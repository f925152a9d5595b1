"""covering indexes for tag search and for the records a user may read

A tag's records come from ``(tag, record_id)`` alone (the old index on ``tag`` needed a table
row per record), and a user's record grants from ``(user_id, target_kind, level, target_id)``
(the old ``(user_id, target_kind)`` read every grant's row to check its level), so a search
can start from what a non-admin user may read without touching other users' grants.

On PostgreSQL, trigram GIN indexes (``pg_trgm``, a trusted extension) on ``records.title`` and
``records.description`` answer text search's ``ILIKE '%word%'`` without a scan (SQLite has
its FTS5 trigram table from 0003). They have no model (``database.include_name`` leaves them
out of model comparisons).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


TRIGRAM_INDEXES = ("title", "description")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for column in TRIGRAM_INDEXES:
            op.execute(
                f"CREATE INDEX IF NOT EXISTS ix_records_{column}_trgm ON records USING gin ({column} gin_trgm_ops)"
            )
    op.drop_index("ix_record_tags_tag", table_name="record_tags")
    op.create_index("ix_record_tags_tag_record", "record_tags", ["tag", "record_id"], unique=False)
    op.drop_index("ix_grants_user", table_name="grants")
    op.create_index(
        "ix_grants_user", "grants", ["user_id", "target_kind", "level", "target_id"], unique=False
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for column in TRIGRAM_INDEXES:
            op.execute(f"DROP INDEX IF EXISTS ix_records_{column}_trgm")
    op.drop_index("ix_grants_user", table_name="grants")
    op.create_index("ix_grants_user", "grants", ["user_id", "target_kind"], unique=False)
    op.drop_index("ix_record_tags_tag_record", table_name="record_tags")
    op.create_index("ix_record_tags_tag", "record_tags", ["tag"], unique=False)
