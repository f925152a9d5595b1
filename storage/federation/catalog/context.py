"""The per-request context (session, principal, levels, limits) and the ``Catalog`` entry point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from storage.federation.access import Grants, Principal, compute_grants
from storage.federation.auth import authenticate
from storage.federation.database import Database
from storage.federation.models import AuditEntry

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """Size limits of the store, in bytes unless named otherwise."""

    max_metadata_bytes: int = 256 * 1024
    max_body_bytes: int = 4 * 1024 * 1024
    max_file_bytes: int = 1024 * 1024 * 1024
    max_page: int = 1000
    #: Records per batch creation. One batch is one write transaction, holding SQLite's write
    #: lock throughout: at ~0.5 ms per record that is ~0.5 s, well inside the busy timeout
    #: (``database.BUSY_TIMEOUT_S``, 10 s) that every other writer waits through.
    max_batch: int = 1000


@dataclass
class Ctx:
    """What one operation works with."""

    session: Session
    principal: Principal
    limits: Limits
    _grants: Grants | None = field(default=None, repr=False)

    @property
    def grants(self) -> Grants:
        """The principal's levels, computed on first use."""
        if self._grants is None:
            self._grants = compute_grants(self.session, self.principal)
        return self._grants

    def audit(self, action: str, target: str, **detail: Any) -> None:
        """Append one line to the audit log, in the same transaction as the write."""
        self.session.add(
            AuditEntry(user_id=self.principal.user_id, action=action, target=target, detail=detail)
        )


class Catalog:
    """A database plus limits; runs operations as read or write transactions."""

    def __init__(self, db: Database, limits: Limits | None = None, data_root: Path | None = None) -> None:
        self.db = db
        self.limits = limits or Limits()
        self.data_root = data_root

    def principal(self, authorization: str | None) -> Principal:
        """Authenticate an ``Authorization`` header value."""
        with self.db.reading() as session:
            return authenticate(session, authorization)

    def read(self, principal: Principal, fn: Callable[[Ctx], T]) -> T:
        """Run ``fn`` in a read transaction."""
        with self.db.reading() as session:
            return fn(Ctx(session, principal, self.limits))

    def write(self, principal: Principal, fn: Callable[[Ctx], T]) -> T:
        """Run ``fn`` in a write transaction (retried whole on SQLite lock contention)."""
        return self.db.write(lambda session: fn(Ctx(session, principal, self.limits)))
