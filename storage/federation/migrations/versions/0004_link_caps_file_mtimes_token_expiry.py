"""link caps, server-side file mtimes, token expiry

``collection_items.max_level`` caps what a collection passes on to a linked record. Existing
links were made by someone who held read at least; who is not known. A link whose collection
and record have the same owner is the owner's own filing and keeps admin (3); every other
link passes nothing on (0) until one of the record's admins links it again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("collection_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_level", sa.Integer(), server_default="0", nullable=False))
    op.execute(
        "UPDATE collection_items SET max_level = 3 WHERE EXISTS ("
        " SELECT 1 FROM collections c, records r"
        " WHERE c.id = collection_items.collection_id AND r.id = collection_items.record_id"
        " AND c.owner_id = r.owner_id)"
    )
    with op.batch_alter_table("replica_files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mtime_ns", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_column("expires")
    with op.batch_alter_table("replica_files", schema=None) as batch_op:
        batch_op.drop_column("mtime_ns")
    with op.batch_alter_table("collection_items", schema=None) as batch_op:
        batch_op.drop_column("max_level")
