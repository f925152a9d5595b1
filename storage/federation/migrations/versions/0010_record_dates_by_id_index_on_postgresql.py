"""PostgreSQL: each record's dates by its id, from an index alone

A restricted user's metadata search collects its matches (1 727 for ``md_range_nested`` in
1 M records) and sorts them by date: each cost a primary-key lookup and a random read of its
``records`` row for the date alone (27 of 85 ms of the statement at load 14). ``(id) INCLUDE
(created, updated)`` answers the sort from the index (8 ms there); only the page's rows are
read. SQLite needs none: its index on ``created`` already holds each row's id.

No model: an index with ``INCLUDE`` exists on PostgreSQL only (``database.include_name``
keeps it out of the model comparison, as the trigram indexes are).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

from storage.federation.database import RECORD_DATES_INDEX

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(RECORD_DATES_INDEX, "records", ["id"], postgresql_include=["created", "updated"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(RECORD_DATES_INDEX, table_name="records")
