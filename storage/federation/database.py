"""Engines, sessions and migrations of the catalog database.

SQLite (the embedded default) runs in WAL mode with a busy timeout, and write transactions
start with ``BEGIN IMMEDIATE``: a deferred transaction that upgrades from reading to writing
fails at once with "database is locked" instead of waiting, which is what loses writes under
concurrency. Writes are retried only on that error, a few times with backoff; every other
error propagates. PostgreSQL needs none of this and gets a plain engine.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from scopeflow.errors import ServiceError
from storage.federation.errors import ConflictError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long SQLite waits on a lock before answering "database is locked", in seconds.
BUSY_TIMEOUT_S = 10.0
#: Attempts of one write transaction when SQLite still answers "database is locked".
WRITE_ATTEMPTS = 6
#: Bytes of the SQLite file read through a memory map (shared by every connection).
MMAP_BYTES = 1 << 30
#: Page cache of each SQLite connection, in KiB.
CACHE_KIB = 16 * 1024

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


#: The SQLite full-text index of record titles and descriptions (migration 0003; no model).
FTS_TABLE = "records_fts"


#: Suffix of PostgreSQL's trigram indexes for text search (migration 0006; no model).
TRIGRAM_SUFFIX = "_trgm"

#: PostgreSQL's index of each record's dates by id (migration 0010; no model: ``INCLUDE``).
RECORD_DATES_INDEX = "ix_records_id_dates"


def include_name(name: str | None, type_: str, _parents: object) -> bool:
    """Alembic filter: leave the full-text indexes (SQLite's FTS table and its shadow tables,
    PostgreSQL's trigram indexes) and PostgreSQL's index of record dates out of comparisons."""
    if name is None:
        return True
    if type_ == "table":
        return not name.startswith(FTS_TABLE)
    return not (type_ == "index" and (name.endswith(TRIGRAM_SUFFIX) or name == RECORD_DATES_INDEX))


def sqlite_url(path: Path) -> str:
    """SQLAlchemy URL of a SQLite database file."""
    return f"sqlite:///{Path(path).resolve()}"


def _sqlite_engine(url: str, begin: str) -> Engine:
    engine = create_engine(
        url,
        connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
        pool_size=8,
        max_overflow=8,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below (pysqlite's own
        # implicit BEGIN is always DEFERRED).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        # NORMAL is durable across application crashes in WAL mode; only power loss can
        # drop the last transactions, and it halves the fsyncs per write.
        cur.execute("PRAGMA synchronous=NORMAL")
        # Reads through a shared memory map of the file instead of a read() per page, a larger
        # page cache per connection, and sorts of search results in memory.
        cur.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        cur.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    return engine


# PostgreSQL's transient failures of a transaction that ran into another (SQLSTATE): a
# deadlock detected and a serialization failure. The whole transaction may simply run again.
RETRY_STATES = frozenset({"40P01", "40001"})


def is_transient_error(error: BaseException) -> bool:
    """True for a write that failed only because of another transaction at the same moment:
    SQLite locked past its busy timeout, a PostgreSQL deadlock or serialization failure."""
    if is_locked_error(error):
        return True
    return isinstance(error, DBAPIError) and getattr(error.orig, "sqlstate", None) in RETRY_STATES


def is_locked_error(error: BaseException) -> bool:
    """True for SQLite's transient 'database is locked' / 'database is busy' errors only."""
    if not isinstance(error, OperationalError):
        return False
    text = str(error.orig).lower()
    return "database is locked" in text or "database is busy" in text


class Database:
    """The catalog database: a read and a write session factory, migrations, retries."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            if ":memory:" in url or url in ("sqlite://", "sqlite:///"):
                raise ValueError("the catalog needs a SQLite file, not an in-memory database")
            self.read_engine = _sqlite_engine(url, "BEGIN")
            self.write_engine = _sqlite_engine(url, "BEGIN IMMEDIATE")
        else:
            self.read_engine = self.write_engine = create_engine(url, pool_pre_ping=True)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            self.write_engine.dispose()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads; rolled back on exit."""
        with self._read() as session, session.begin():
            yield session

    def write(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in one write transaction and commit.

        Retried (the whole of ``fn``, so it must be free of side effects outside the session)
        only when another transaction made it fail (``is_transient_error``). A constraint the
        database refuses that ``fn`` did not turn into an error of ours (a row it refers to
        deleted by a concurrent request meanwhile) is a ``ConflictError`` (HTTP 409), not a 500.
        """
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self._write() as session, session.begin():
                    return fn(session)
            except IntegrityError as error:
                raise ConflictError(
                    "the catalog changed while this request was written (a row it refers to was"
                    " removed or taken meanwhile); try again"
                ) from error
            except DBAPIError as error:
                if not is_transient_error(error) or attempt == WRITE_ATTEMPTS:
                    if is_transient_error(error):
                        raise ServiceError(
                            f"the catalog database stayed busy through {WRITE_ATTEMPTS} attempts"
                        ) from error
                    raise
                delay = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
                log.warning("write met another transaction (attempt %d); retrying in %.2f s", attempt, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to Alembic ``revision`` (default the newest; a no-op when already there)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self.write_engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
