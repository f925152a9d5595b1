"""``sync_directory``: make a destination hold a verified copy of a local tree, moving only
what is missing or changed, resumable after a kill."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from scopeflow.errors import IntegrityError, NotFoundError
from storage.transfer.manifest import FileEntry, build_manifest
from storage.transfer.protocol import TransferBackend
from storage.transfer.state import SyncState


@dataclass
class SyncReport:
    """What one sync did. Sizes in bytes, time in seconds."""

    source: str
    destination: str
    backend: str
    files_total: int
    bytes_total: int
    files_sent: int
    bytes_sent: int
    seconds: float
    manifest: dict[str, FileEntry] = field(repr=False)
    sent: list[str] = field(default_factory=list, repr=False)

    def files(self) -> list[dict[str, object]]:
        """The verified manifest as ``{path, size, sha256}`` dicts (for a replica record)."""
        return [{"path": e.path, "size": e.size, "sha256": e.sha256} for e in self.manifest.values()]


def sync_directory(
    src: Path, dest: str | Path, backend: TransferBackend, *, state_dir: Path | None = None
) -> SyncReport:
    """Sync the tree ``src`` to ``dest`` through ``backend``.

    Every file of ``src`` ends up confirmed by sha256 at ``dest`` (or an error is raised); the
    journal under ``state_dir`` (default ``$SCOPEFLOW_HOME/sync-state``) makes reruns cheap and
    lets a killed sync resume. Files deleted from ``src`` are left at ``dest``.
    """
    t0 = time.perf_counter()
    src = Path(src).resolve()
    if not src.is_dir():
        raise NotFoundError(f"nothing to sync: {src} is not a directory")
    dest = str(dest)
    state = SyncState.for_destination(backend.name, dest, state_dir)
    try:
        # Files the journal vouches for keep their digest; new ones are hashed by the backend.
        manifest = build_manifest(src, known=state.known_entries(), hash_new=False)
        todo = backend.plan(src, dest, list(manifest.values()), state)
        if todo:
            backend.send(src, dest, todo, state)
        final: dict[str, FileEntry] = {}
        for path, entry in manifest.items():
            v = state.verified.get(path)
            if v is None or v.size != entry.size or v.src_mtime_ns != entry.mtime_ns:
                raise IntegrityError(f"{path} was not confirmed at {dest}; run the sync again")
            final[path] = FileEntry(path, entry.size, entry.mtime_ns, v.sha256)
        state.compact(keep=set(manifest))
    finally:
        state.close()
    sent = sorted(e.path for e in todo)
    return SyncReport(
        source=str(src),
        destination=dest,
        backend=backend.name,
        files_total=len(final),
        bytes_total=sum(e.size for e in final.values()),
        files_sent=len(sent),
        bytes_sent=sum(manifest[p].size for p in sent),
        seconds=time.perf_counter() - t0,
        manifest=final,
        sent=sent,
    )
