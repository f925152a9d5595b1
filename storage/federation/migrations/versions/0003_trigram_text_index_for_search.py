"""trigram full-text index of record titles and descriptions for text search (SQLite)

An external-content FTS5 table (``records_fts``, trigram tokenizer) over ``records.title`` and
``records.description``, kept in step by triggers. Text search uses it to find candidate
records for words of three or more characters and still applies its ``LIKE`` conditions, so
results are unchanged; only the full scan of ``records`` goes. PostgreSQL is left as it is.

Note for later migrations: a batch ("move and copy") alteration of ``records`` on SQLite
drops these triggers; recreate them (``_TRIGGERS``) and run the ``rebuild`` command after it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TRIGGERS = (
    """CREATE TRIGGER records_fts_insert AFTER INSERT ON records BEGIN
        INSERT INTO records_fts(rowid, title, description) VALUES (new.id, new.title, new.description);
    END""",
    """CREATE TRIGGER records_fts_delete AFTER DELETE ON records BEGIN
        INSERT INTO records_fts(records_fts, rowid, title, description)
        VALUES ('delete', old.id, old.title, old.description);
    END""",
    """CREATE TRIGGER records_fts_update AFTER UPDATE OF title, description ON records BEGIN
        INSERT INTO records_fts(records_fts, rowid, title, description)
        VALUES ('delete', old.id, old.title, old.description);
        INSERT INTO records_fts(rowid, title, description) VALUES (new.id, new.title, new.description);
    END""",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "CREATE VIRTUAL TABLE records_fts USING fts5("
        "title, description, content='records', content_rowid='id', tokenize='trigram')"
    )
    for trigger in _TRIGGERS:
        op.execute(trigger)
    op.execute("INSERT INTO records_fts(records_fts) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in ("records_fts_update", "records_fts_delete", "records_fts_insert"):
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DROP TABLE IF EXISTS records_fts")
