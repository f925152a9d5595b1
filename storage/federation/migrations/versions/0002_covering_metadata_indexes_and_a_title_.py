"""covering metadata indexes and a title index for search

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("record_md", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_record_md_record_id"))
        batch_op.drop_index(batch_op.f("ix_record_md_key_num"))
        batch_op.create_index("ix_record_md_key_num", ["key", "kind", "num", "record_id"], unique=False)
        batch_op.drop_index(batch_op.f("ix_record_md_key_text"))
        batch_op.create_index("ix_record_md_key_text", ["key", "kind", "text", "record_id"], unique=False)
        batch_op.create_index("ix_record_md_probe", ["record_id", "key", "kind", "num", "text"], unique=False)

    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_records_title"), ["title"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_records_title"))

    with op.batch_alter_table("record_md", schema=None) as batch_op:
        batch_op.drop_index("ix_record_md_probe")
        batch_op.drop_index("ix_record_md_key_text")
        batch_op.create_index(batch_op.f("ix_record_md_key_text"), ["key", "text"], unique=False)
        batch_op.drop_index("ix_record_md_key_num")
        batch_op.create_index(batch_op.f("ix_record_md_key_num"), ["key", "num"], unique=False)
        batch_op.create_index(batch_op.f("ix_record_md_record_id"), ["record_id"], unique=False)
