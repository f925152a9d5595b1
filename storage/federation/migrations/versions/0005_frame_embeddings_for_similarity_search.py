"""frame embeddings for similarity search

One row per (record, embedder version, frame): the descriptor as float32 bytes and an optional
PNG thumbnail. The vector index beside the catalog is a cache of these rows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "frame_embeddings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("embedder", sa.String(length=64), nullable=False),
        sa.Column("frame", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("thumbnail", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["records.id"],
            name=op.f("fk_frame_embeddings_record_id_records"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_frame_embeddings")),
        sa.UniqueConstraint("record_id", "embedder", "frame", name="uq_frame_embedding"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("frame_embeddings", schema=None) as batch_op:
        batch_op.create_index("ix_frame_embeddings_embedder_id", ["embedder", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("frame_embeddings", schema=None) as batch_op:
        batch_op.drop_index("ix_frame_embeddings_embedder_id")
    op.drop_table("frame_embeddings")
