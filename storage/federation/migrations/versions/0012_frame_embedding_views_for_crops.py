"""frame embedding views: a frame's crops as rows of the similarity index

``frame_embeddings.view``: 0 for a frame's own descriptor (every row so far), 1… for crops of
the frame, each a row of the vector index pointing at its frame. The unique key gains it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("frame_embeddings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("view", sa.SmallInteger(), server_default="0", nullable=False))
        batch_op.drop_constraint("uq_frame_embedding", type_="unique")
        batch_op.create_unique_constraint(
            "uq_frame_embedding_view", ["record_id", "embedder", "frame", "view"]
        )


def downgrade() -> None:
    # Crop rows have no place in the old key: they go, frames' own rows stay.
    op.execute("DELETE FROM frame_embeddings WHERE view <> 0")
    with op.batch_alter_table("frame_embeddings", schema=None) as batch_op:
        batch_op.drop_constraint("uq_frame_embedding_view", type_="unique")
        batch_op.create_unique_constraint("uq_frame_embedding", ["record_id", "embedder", "frame"])
        batch_op.drop_column("view")
