"""the metadata index of records shared by a grant or a collection link, kept by triggers

A restricted user's metadata search probed the metadata index once per record they reach
through a grant or a collection link (4 000 at 1 M records: ~10 of 16 ms of the statement on
PostgreSQL). ``record_md_shared`` holds those records' index rows under the grant's or the
link's holder (``shared_index``), so the term is one index range per holder, as for owners
and projects (migration 0008). Triggers keep it exact; existing grants and links are copied
here.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.federation import shared_index

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        shared_index.TABLE,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("holder", sa.Integer(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=256), nullable=False),
        sa.Column("kind", sa.String(length=1), nullable=False),
        sa.Column("num", sa.Float(), nullable=True),
        sa.Column("text", sa.String(length=256), nullable=True),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["record_md.id"],
            name=op.f("fk_record_md_shared_entry_id_record_md"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_md_shared")),
    )
    op.create_index(op.f("ix_record_md_shared_entry_id"), shared_index.TABLE, ["entry_id"], unique=False)
    op.create_index(
        "ix_record_md_shared_holder",
        shared_index.TABLE,
        ["holder", "key", "kind", "num", "text", "record_id", "level"],
        unique=False,
    )
    conn = op.get_bind()
    shared_index.rebuild(conn)
    shared_index.install(conn)
    if conn.dialect.name == "postgresql":
        op.execute(f"ANALYZE {shared_index.TABLE}")


def downgrade() -> None:
    shared_index.uninstall(op.get_bind())
    op.drop_index("ix_record_md_shared_holder", table_name=shared_index.TABLE)
    op.drop_index(op.f("ix_record_md_shared_entry_id"), table_name=shared_index.TABLE)
    op.drop_table(shared_index.TABLE)
