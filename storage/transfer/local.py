"""``LocalBackend``: copy between directories (repositories on one machine or a shared mount).

Each file is copied to a temporary name under ``<dest>/.scopeflow-partial/`` while its sha256
is computed, renamed into place (atomic), then read back and hashed: only a file whose
destination bytes hash to the source's digest is marked verified. A killed copy leaves at
most a temporary file, removed by the next sync.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scopeflow.errors import InputError, IntegrityError, StorageError
from storage.transfer.manifest import FileEntry, buffer, sha256_file
from storage.transfer.state import SyncState
from storage.transfer.throttle import Throttle

PARTIAL_DIR = ".scopeflow-partial"


def _write_all(out: io.RawIOBase, data: memoryview) -> None:
    """Write every byte (an unbuffered write may take fewer than offered)."""
    while data:
        written = out.write(data)
        data = data[written or 0 :]


class LocalBackend:
    """Copies files into a destination directory, verifying each by sha256.

    ``workers``: files copied at once (hashing and file I/O release the GIL, so threads
    overlap reading, hashing and writing). ``max_rate``: bandwidth cap in bytes/s (None: none).
    ``verify``: ``"changed"`` trusts a destination file whose size and mtime match the journal,
    ``"full"`` re-hashes every destination file.
    """

    name = "local"

    def __init__(
        self, workers: int | None = None, max_rate: float | None = None, verify: str = "changed"
    ) -> None:
        if verify not in ("changed", "full"):
            raise InputError(f"verify must be 'changed' or 'full', not {verify!r}")
        self.workers = workers or min(4, 2 * (os.cpu_count() or 1))
        self.max_rate = max_rate
        self.verify = verify

    # -- planning ------------------------------------------------------------------------------

    def plan(
        self, src_root: Path, dest: str, files: Sequence[FileEntry], state: SyncState
    ) -> list[FileEntry]:
        """Files missing at ``dest``, different in size, or whose destination hash differs."""
        dest_root = Path(dest)
        todo: list[FileEntry] = []
        for entry in files:
            target = dest_root / entry.path
            try:
                st = target.stat()
            except (FileNotFoundError, NotADirectoryError):
                todo.append(entry)
                continue
            known = state.verified.get(entry.path)
            trusted = (
                self.verify == "changed"
                and known is not None
                and entry.sha256 == known.sha256
                and st.st_size == known.size
                and st.st_mtime_ns == known.dest_mtime_ns
            )
            if trusted:
                continue
            if st.st_size != entry.size:
                todo.append(entry)
                continue
            # Same size, not vouched for by the journal (or a full check): compare bytes.
            if entry.sha256 is None:
                entry = FileEntry(entry.path, entry.size, entry.mtime_ns, sha256_file(src_root / entry.path))
            if sha256_file(target) == entry.sha256:
                state.mark_verified(entry, st.st_mtime_ns)
            else:
                state.drop(entry.path)
                todo.append(entry)
        return todo

    # -- sending -------------------------------------------------------------------------------

    def send(self, src_root: Path, dest: str, files: Sequence[FileEntry], state: SyncState) -> None:
        """Copy and verify ``files``, marking each in ``state`` as soon as it is confirmed."""
        dest_root = Path(dest)
        partial = dest_root / PARTIAL_DIR
        shutil.rmtree(partial, ignore_errors=True)  # leftovers of a killed sync
        try:
            partial.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot write to destination {dest_root}: {error}") from error
        throttle = Throttle(self.max_rate)
        made_dirs: set[Path] = set()

        def one(entry: FileEntry) -> None:
            done, dest_mtime = self._copy(src_root, dest_root, partial, entry, throttle, made_dirs)
            state.mark_verified(done, dest_mtime)

        try:
            if self.workers <= 1 or len(files) <= 1:
                for entry in files:
                    one(entry)
            else:
                with ThreadPoolExecutor(self.workers, thread_name_prefix="sync") as pool:
                    for future in [pool.submit(one, e) for e in files]:
                        future.result()
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def _copy(
        self,
        src_root: Path,
        dest_root: Path,
        partial: Path,
        entry: FileEntry,
        throttle: Throttle,
        made_dirs: set[Path],
    ) -> tuple[FileEntry, int]:
        src = src_root / entry.path
        target = dest_root / entry.path
        view = buffer()  # per-thread, reused: no allocation per file or chunk
        buf = view
        for attempt in (1, 2):
            tmp = partial / uuid.uuid4().hex
            digest = hashlib.sha256()
            try:
                before = src.stat()
                with open(src, "rb", buffering=0) as fin, open(tmp, "wb", buffering=0) as fout:
                    while n := fin.readinto(buf):
                        digest.update(view[:n])
                        _write_all(fout, view[:n])
                        throttle.consume(n)
                after = src.stat()
                if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
                    raise IntegrityError(f"{src} changed while it was copied; run the sync again")
                sha = digest.hexdigest()
                if entry.sha256 is not None and sha != entry.sha256:
                    raise IntegrityError(f"{src} changed since it was listed; run the sync again")
                if target.parent not in made_dirs:  # one mkdir per directory, not per file
                    target.parent.mkdir(parents=True, exist_ok=True)
                    made_dirs.add(target.parent)
                os.replace(tmp, target)
            except OSError as error:
                tmp.unlink(missing_ok=True)
                raise StorageError(f"copying {entry.path} to {dest_root}: {error}") from error
            # Read back what the destination now holds; only matching bytes count as verified.
            if sha256_file(target) == sha:
                return FileEntry(entry.path, after.st_size, after.st_mtime_ns, sha), target.stat().st_mtime_ns
            if attempt == 2:
                raise IntegrityError(f"{target} does not match its source after two copies (sha256 differs)")
        raise AssertionError("unreachable")
