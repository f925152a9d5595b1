"""The metadata index of records shared by a grant or a collection link (``SharedEntry``),
kept by the database itself.

A record a user reaches through a grant on it (to them or to everyone) or a link into a
collection has its metadata index rows copied once per such grant or link, under a
``holder``: the grantee's user id, 0 for a grant to everyone, minus the collection's id for a
link. "This term, among what this user may read through grants and collections" is then one
index range per holder, as it is per owner and project in ``MetadataEntry`` (where it was a
probe of the metadata index per granted record: ~10 of 16 ms of a restricted user's search at
1 M records on PostgreSQL, 4 000 such records).

Triggers keep the copies exact in the same transaction as the change: a grant on a record
made, changed or revoked; a link made, changed or removed (a collection's deletion removes its
links); a record's metadata rewritten. A record's deletion removes its index rows and so their
copies (``entry_id`` cascades). Which holders a user reaches at a level is decided where it was
(``access.Grants``), so the rules stay in one place; a copy only says "this grant or link
exists, at this level".
"""

from __future__ import annotations

from sqlalchemy import Connection

TABLE = "record_md_shared"
_COLUMNS = "entry_id, holder, level, record_id, key, kind, num, text"

# Every copy of one (record, grantee) pair from the grants that exist now: after a grant is
# made, changed or revoked (a grant to everyone may exist twice: user NULL is never equal).
_GRANT_COPIES = (
    f"INSERT INTO {TABLE} ({_COLUMNS})"
    " SELECT m.id, COALESCE(g.user_id, 0), g.level, m.record_id, m.key, m.kind, m.num, m.text"
    " FROM grants AS g JOIN record_md AS m ON m.record_id = g.target_id"
    " WHERE g.target_kind = 'd' AND g.target_id = {rec}.target_id AND g.user_id {same} {rec}.user_id"
)
_GRANT_DROP = (
    f"DELETE FROM {TABLE} WHERE holder = COALESCE({{rec}}.user_id, 0)"
    " AND entry_id IN (SELECT id FROM record_md WHERE record_id = {rec}.target_id)"
)
_LINK_COPIES = (
    f"INSERT INTO {TABLE} ({_COLUMNS})"
    " SELECT m.id, -{rec}.collection_id, {rec}.max_level, m.record_id, m.key, m.kind, m.num, m.text"
    " FROM record_md AS m WHERE m.record_id = {rec}.record_id AND {rec}.max_level > 0"
)
_LINK_DROP = (
    f"DELETE FROM {TABLE} WHERE holder = -{{rec}}.collection_id"
    " AND entry_id IN (SELECT id FROM record_md WHERE record_id = {rec}.record_id)"
)


def _entry_copies(pg: bool) -> str:
    """New index rows of records, copied for each grant on their record and each link of it:
    per row on SQLite (``NEW``), per statement over its new rows on PostgreSQL."""
    n, rows, on = ("n", "new_entries AS n JOIN ", "ON") if pg else ("NEW", "", "WHERE")
    values = f"{n}.id, {{holder}}, {{level}}, {n}.record_id, {n}.key, {n}.kind, {n}.num, {n}.text"
    grants = values.format(holder="COALESCE(g.user_id, 0)", level="g.level")
    links = values.format(holder="-c.collection_id", level="c.max_level")
    return (
        f"INSERT INTO {TABLE} ({_COLUMNS}) SELECT {grants}"
        f" FROM {rows}grants AS g {on} g.target_kind = 'd' AND g.target_id = {n}.record_id;"
        f" INSERT INTO {TABLE} ({_COLUMNS}) SELECT {links}"
        f" FROM {rows}collection_items AS c {on} c.record_id = {n}.record_id AND c.max_level > 0"
    )


def _grant_refresh(rec: str, same: str) -> str:
    return f"{_GRANT_DROP.format(rec=rec)}; {_GRANT_COPIES.format(rec=rec, same=same)}"


def _sqlite_triggers() -> list[str]:
    same = "IS"
    return [
        f"CREATE TRIGGER {TABLE}_grant_insert AFTER INSERT ON grants WHEN NEW.target_kind = 'd'"
        f" BEGIN {_grant_refresh('NEW', same)}; END",
        f"CREATE TRIGGER {TABLE}_grant_delete AFTER DELETE ON grants WHEN OLD.target_kind = 'd'"
        f" BEGIN {_grant_refresh('OLD', same)}; END",
        f"CREATE TRIGGER {TABLE}_grant_update AFTER UPDATE ON grants"
        f" WHEN OLD.target_kind = 'd' OR NEW.target_kind = 'd'"
        f" BEGIN {_grant_refresh('OLD', same)}; {_grant_refresh('NEW', same)}; END",
        f"CREATE TRIGGER {TABLE}_link_insert AFTER INSERT ON collection_items"
        f" BEGIN {_LINK_COPIES.format(rec='NEW')}; END",
        f"CREATE TRIGGER {TABLE}_link_delete AFTER DELETE ON collection_items"
        f" BEGIN {_LINK_DROP.format(rec='OLD')}; END",
        f"CREATE TRIGGER {TABLE}_link_update AFTER UPDATE ON collection_items"
        f" BEGIN {_LINK_DROP.format(rec='OLD')}; {_LINK_COPIES.format(rec='NEW')}; END",
        f"CREATE TRIGGER {TABLE}_entry_insert AFTER INSERT ON record_md BEGIN {_entry_copies(pg=False)}; END",
    ]


_SQLITE_NAMES = [f"{TABLE}_{n}" for n in ("grant_insert", "grant_delete", "grant_update")] + [
    f"{TABLE}_{n}" for n in ("link_insert", "link_delete", "link_update", "entry_insert")
]


def _pg_statements() -> list[str]:
    same = "IS NOT DISTINCT FROM"
    # Each function first locks the rows of the records it copies for, as a metadata rewrite's
    # UPDATE of the record does: a grant revoked while another transaction rewrote the record's
    # metadata otherwise left that transaction's new copies behind (READ COMMITTED: neither saw
    # the other's uncommitted rows; reproduced). Each statement after the lock reads with a
    # fresh snapshot, so the second of the two sees what the first committed.
    lock = "PERFORM 1 FROM records WHERE id = {rec}.{column} FOR NO KEY UPDATE"
    # A grant's target kind 'd' only ("grants" also holds grants on projects and collections).
    grants = f"""CREATE FUNCTION {TABLE}_grants() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' AND OLD.target_kind = 'd' THEN
    {lock.format(rec="OLD", column="target_id")}; {_grant_refresh("OLD", same)};
  END IF;
  IF TG_OP <> 'DELETE' AND NEW.target_kind = 'd' THEN
    {lock.format(rec="NEW", column="target_id")}; {_grant_refresh("NEW", same)};
  END IF;
  RETURN NULL;
END $$"""
    links = f"""CREATE FUNCTION {TABLE}_links() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN {lock.format(rec="OLD", column="record_id")}; {_LINK_DROP.format(rec="OLD")}; END IF;
  IF TG_OP <> 'DELETE' THEN {lock.format(rec="NEW", column="record_id")}; {_LINK_COPIES.format(rec="NEW")}; END IF;
  RETURN NULL;
END $$"""
    # Once per statement over its new rows (a batch of 1 000 records writes ~7 000 index rows:
    # a trigger per row cost 53-89 ms of them at load 9, two joins cost ~1 ms).
    entries = f"""CREATE FUNCTION {TABLE}_entries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM records AS r WHERE r.id IN (SELECT record_id FROM new_entries) FOR NO KEY UPDATE OF r;
  {_entry_copies(pg=True)};
  RETURN NULL;
END $$"""
    return [
        grants,
        links,
        entries,
        f"CREATE TRIGGER {TABLE}_grants AFTER INSERT OR UPDATE OR DELETE ON grants"
        f" FOR EACH ROW EXECUTE FUNCTION {TABLE}_grants()",
        f"CREATE TRIGGER {TABLE}_links AFTER INSERT OR UPDATE OR DELETE ON collection_items"
        f" FOR EACH ROW EXECUTE FUNCTION {TABLE}_links()",
        f"CREATE TRIGGER {TABLE}_entries AFTER INSERT ON record_md REFERENCING NEW TABLE AS new_entries"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_entries()",
    ]


def install(conn: Connection) -> None:
    """Create the triggers that keep ``record_md_shared`` exact."""
    statements = _sqlite_triggers() if conn.dialect.name == "sqlite" else _pg_statements()
    for statement in statements:
        conn.exec_driver_sql(statement)


def uninstall(conn: Connection) -> None:
    """Drop those triggers (a bulk load drops them, then calls ``rebuild`` and ``install``)."""
    if conn.dialect.name == "sqlite":
        for name in _SQLITE_NAMES:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
        return
    for table, name in (("grants", "grants"), ("collection_items", "links"), ("record_md", "entries")):
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {TABLE}_{name} ON {table}")
        conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {TABLE}_{name}()")


def rebuild(conn: Connection) -> None:
    """Every copy again from the grants and links there are (a migration, a bulk load)."""
    conn.exec_driver_sql(f"DELETE FROM {TABLE}")
    conn.exec_driver_sql(
        f"INSERT INTO {TABLE} ({_COLUMNS})"
        " SELECT m.id, COALESCE(g.user_id, 0), g.level, m.record_id, m.key, m.kind, m.num, m.text"
        " FROM grants AS g JOIN record_md AS m ON m.record_id = g.target_id WHERE g.target_kind = 'd'"
    )
    conn.exec_driver_sql(
        f"INSERT INTO {TABLE} ({_COLUMNS})"
        " SELECT m.id, -c.collection_id, c.max_level, m.record_id, m.key, m.kind, m.num, m.text"
        " FROM collection_items AS c JOIN record_md AS m ON m.record_id = c.record_id WHERE c.max_level > 0"
    )
