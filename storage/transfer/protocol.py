"""The seam between the sync engine and the ways bytes move."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from scopeflow.errors import ServiceError
from storage.transfer.manifest import FileEntry
from storage.transfer.state import SyncState


class TransferError(ServiceError):
    """A transfer backend failed: a Globus API error or task failure, a copy that broke off."""


@runtime_checkable
class TransferBackend(Protocol):
    """Moves files from a local tree to a destination and confirms them by checksum."""

    #: Short name, part of the key of the sync state ("local", "globus").
    name: str

    def plan(
        self, src_root: Path, dest: str, files: Sequence[FileEntry], state: SyncState
    ) -> list[FileEntry]:
        """The files that must be sent: missing, changed, or failing their checksum at ``dest``."""
        ...

    def send(self, src_root: Path, dest: str, files: Sequence[FileEntry], state: SyncState) -> None:
        """Make ``dest`` hold byte-identical copies, marking each in ``state`` once verified."""
        ...
