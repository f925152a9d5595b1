"""SQL tables of the catalog (SQLAlchemy 2 declarative models).

The schema is versioned by the Alembic migrations in ``migrations/``; a test checks that these
models and the migrated database agree. Times are timezone-aware UTC; sizes are bytes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

#: JSON on SQLite, JSONB on PostgreSQL.
JsonType = JSON().with_variant(JSONB(), "postgresql")

# Named constraints so Alembic can alter them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """Now, in UTC, timezone-aware."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A DateTime always stored as UTC and returned timezone-aware.

    SQLite keeps no zone; without this, values read back are naive and compare wrongly.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        value = value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    """A person or service account; ``is_admin`` users may do everything."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Token(Base):
    """A bearer token; only its sha256 is stored, so a leaked database leaks no tokens."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(128), default="")
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: After this the token is refused (None: never expires).
    expires: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Project(Base):
    """A group of users sharing records; members hold a permission level on its items."""

    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    title: Mapped[str] = mapped_column(String(512), default="")
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ProjectMember(Base):
    """Membership of a user in a project at a level (1 read, 2 write, 3 admin)."""

    __tablename__ = "project_members"
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    level: Mapped[int] = mapped_column(Integer)


class JsonSchemaDoc(Base):
    """A registered JSON Schema that record metadata may name and is validated against."""

    __tablename__ = "schemas"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    body: Mapped[dict[str, Any]] = mapped_column(JsonType)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Repository(Base):
    """Where record data lives: a local directory, or a Globus collection plus a base path."""

    __tablename__ = "repositories"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "local" | "globus"
    path: Mapped[str] = mapped_column(String(1024))  # local directory, or base path on the collection
    globus_collection: Mapped[str | None] = mapped_column(String(64), nullable=True)
    title: Mapped[str] = mapped_column(String(512), default="")
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Allocation(Base):
    """A quota on a repository for one user or one project: bytes and number of records."""

    __tablename__ = "allocations"
    __table_args__ = (UniqueConstraint("repository_id", "user_id", "project_id", name="uq_allocation"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=True)
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), nullable=True
    )
    max_bytes: Mapped[int] = mapped_column(BigInteger)
    max_records: Mapped[int] = mapped_column(Integer)


class Collection(Base):
    """A folder of records; collections form a tree through ``parent_id``."""

    __tablename__ = "collections"
    # AUTOINCREMENT: SQLite would otherwise reuse the id of a deleted last row, and an id
    # must never come back (grants, provenance and audit lines name it).
    __table_args__ = (
        UniqueConstraint("owner_id", "alias", name="uq_collection_alias"),
        {"sqlite_autoincrement": True},
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alias: Mapped[str | None] = mapped_column(String(64), nullable=True)
    title: Mapped[str] = mapped_column(String(512))
    description: Mapped[str] = mapped_column(Text, default="")
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), nullable=True, index=True
    )
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"), nullable=True, index=True)
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Record(Base):
    """A data record: metadata, tags and dependencies here, bytes in repositories (replicas)."""

    __tablename__ = "records"
    __table_args__ = (
        UniqueConstraint("owner_id", "alias", name="uq_record_alias"),
        Index("ix_records_owner_created", "owner_id", "created"),
        # (owner, id) and (project, id): the ids of what a user may read through ownership or a
        # project, from the index alone on PostgreSQL too, whose index entries carry no id
        # (SQLite's carry the rowid: the same index as one on the first column there).
        Index("ix_records_owner_record", "owner_id", "id"),
        Index("ix_records_project_record", "project_id", "id"),
        # A user's own records by title, in order (migration 0009).
        Index("ix_records_owner_title", "owner_id", "title", "id"),
        {"sqlite_autoincrement": True},  # ids are never reused (see Collection)
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alias: Mapped[str | None] = mapped_column(String(64), nullable=True)
    title: Mapped[str] = mapped_column(String(512), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    md: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    schema_id: Mapped[int | None] = mapped_column(ForeignKey("schemas.id"), nullable=True, index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"), nullable=True)
    repository_id: Mapped[int | None] = mapped_column(ForeignKey("repositories.id"), nullable=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)  # bytes of the newest verified replica
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    updated: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class RecordTag(Base):
    """One tag of one record (a table, not a list column, so tag search uses an index)."""

    __tablename__ = "record_tags"
    # Covering: a tag's record ids are read from the index alone.
    __table_args__ = (Index("ix_record_tags_tag_record", "tag", "record_id"),)
    record_id: Mapped[int] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)


class MetadataEntry(Base):
    """One scalar leaf of a record's metadata, indexed for ``md.*`` search expressions.

    ``key`` is the dotted path (``conditions.defocus``); list elements share their list's key,
    so ``md.elements == "Mo"`` means "contains". ``kind`` is ``n`` (number), ``s`` (string),
    ``b`` (boolean, stored in ``num`` as 0/1) or ``z`` (null).
    """

    __tablename__ = "record_md"
    # Covering indexes: a search term is answered from the index alone, either by range
    # (key, kind, value -> record ids) or by probe (record id, key -> value).
    __table_args__ = (
        Index("ix_record_md_key_num", "key", "kind", "num", "record_id"),
        Index("ix_record_md_key_text", "key", "kind", "text", "record_id"),
        Index("ix_record_md_probe", "record_id", "key", "kind", "num", "text"),
        # A term within what one user may read through ownership or a project: one range per
        # owner or project (a restricted user's search would otherwise probe every readable id).
        Index("ix_record_md_owner", "owner_id", "key", "kind", "num", "text", "record_id"),
        Index("ix_record_md_project", "project_id", "key", "kind", "num", "text", "record_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"))
    #: The record's owner and project, copied: neither changes after a record is created.
    #: Nullable only because migration 0008 adds them to existing rows (and fills them).
    owner_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    project_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    key: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(1))
    num: Mapped[float | None] = mapped_column(Float, nullable=True)
    text: Mapped[str | None] = mapped_column(String(256), nullable=True)


class SharedEntry(Base):
    """A copy of one ``MetadataEntry`` of a record shared by a grant or a collection link,
    under its ``holder``: the grantee's user id, 0 for a grant to everyone, minus the
    collection's id for a link; ``level`` is the grant's level or the link's cap. Kept exact by
    triggers (``shared_index``, migration 0011): never written by the application."""

    __tablename__ = "record_md_shared"
    # A term among the records one holder reaches, from the index alone; ``level`` last, a
    # filter on the range's rows.
    __table_args__ = (
        Index("ix_record_md_shared_holder", "holder", "key", "kind", "num", "text", "record_id", "level"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("record_md.id", ondelete="CASCADE"), index=True)
    holder: Mapped[int] = mapped_column(Integer)
    level: Mapped[int] = mapped_column(Integer)
    record_id: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(1))
    num: Mapped[float | None] = mapped_column(Float, nullable=True)
    text: Mapped[str | None] = mapped_column(String(256), nullable=True)


class CollectionItem(Base):
    """A record linked into a collection; a record may be linked into several."""

    __tablename__ = "collection_items"
    collection_id: Mapped[int] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    record_id: Mapped[int] = mapped_column(
        ForeignKey("records.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    #: The most a grant on the collection passes on to the record: the level the linker held
    #: on the record when linking, kept only when that was admin (who could grant it anyway),
    #: else 0, so that linking widens nobody's rights.
    max_level: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Dependency(Base):
    """A typed edge ``subject --kind--> object``: der (derived from), comp (component of), ver."""

    __tablename__ = "dependencies"
    subject_id: Mapped[int] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"), primary_key=True)
    object_id: Mapped[int] = mapped_column(
        ForeignKey("records.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)


class Replica(Base):
    """A verified copy of a record's data in one repository."""

    __tablename__ = "replicas"
    __table_args__ = (UniqueConstraint("record_id", "repository_id", name="uq_replica"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"), index=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id"), index=True)
    path: Mapped[str] = mapped_column(String(1024))  # relative to the repository's root
    size: Mapped[int] = mapped_column(BigInteger)
    n_files: Mapped[int] = mapped_column(Integer)
    verified: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ReplicaFile(Base):
    """One file of a replica with its size (bytes) and sha256 (hex)."""

    __tablename__ = "replica_files"
    replica_id: Mapped[int] = mapped_column(ForeignKey("replicas.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    #: The file's mtime when the server hashed it (ns); lets a later check skip unchanged files.
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Grant(Base):
    """A permission level given on a record, collection or project to one user (or everyone).

    ``user_id`` NULL means every authenticated user. Grants on a collection reach its
    sub-collections and every record linked into any of them.
    """

    __tablename__ = "grants"
    __table_args__ = (
        UniqueConstraint("target_kind", "target_id", "user_id", name="uq_grant"),
        # Covering: the records granted to one user (or to everyone) at a level, from the index.
        Index("ix_grants_user", "user_id", "target_kind", "level", "target_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target_kind: Mapped[str] = mapped_column(String(1))  # "d" | "c" | "p"
    target_id: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=True)
    level: Mapped[int] = mapped_column(Integer)


class AuditEntry(Base):
    """One write: who, when, what action on which target, and a small JSON detail."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, index=True)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(128), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)


class FrameEmbedding(Base):
    """One frame's descriptor (float32 bytes) from one embedder version, and a small PNG thumbnail.

    The source of truth of the similarity index (``storage/federation/similarity``), which is
    rebuilt from these rows when lost; deleting a record deletes its embeddings.
    """

    __tablename__ = "frame_embeddings"
    __table_args__ = (
        UniqueConstraint("record_id", "embedder", "frame", "view", name="uq_frame_embedding_view"),
        Index("ix_frame_embeddings_embedder_id", "embedder", "id"),
        {"sqlite_autoincrement": True},  # row ids only grow: the index catches up by id
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"))
    embedder: Mapped[str] = mapped_column(String(64))
    frame: Mapped[int] = mapped_column(Integer)
    # 0: the frame's own descriptor; 1…: a crop of the frame (``tasks.embedding.embed_views``).
    view: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    thumbnail: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
