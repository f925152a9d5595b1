"""an index of each owner's records by title

A user's own records sorted by title (``owner=<me>, sort=title``) sorted every one of them
after reading its row: 10 000 rows and 50 000 buffers for a user who owns 1 % of 1 M records
on PostgreSQL (120 ms). ``(owner_id, title, id)`` holds them in that order, and on
PostgreSQL answers the ids, their count and the page from the index alone.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_records_owner_title", "records", ["owner_id", "title", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_records_owner_title", table_name="records")
