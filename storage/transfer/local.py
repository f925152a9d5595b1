"""``LocalBackend``: copy between directories (repositories on one machine or a shared mount).

Each file is copied to a temporary name under ``<dest>/.scopeflow-partial/``, in the kernel
(``copy_file_range``, as ``cp`` does) where the file systems allow. The source's sha256 is
computed from the bytes as they are read; the destination's from the bytes read
back from the temporary file through a read-only mapping (the page cache, no second copy into
a buffer): after the copy for small files, by a second thread trailing the writer for large
ones, so that the two digests of one large file are computed at once on two cores. Only when
the destination's digest equals the source's is the file renamed into place (atomic) and
marked verified; otherwise it is copied once more, then the sync fails. A killed copy leaves
at most a temporary file, removed by the next sync.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import mmap
import os
import shutil
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from scopeflow.errors import InputError, IntegrityError, StorageError
from storage.transfer.manifest import CHUNK, FileEntry, buffer, sha256_file
from storage.transfer.state import SyncState
from storage.transfer.throttle import Throttle

PARTIAL_DIR = ".scopeflow-partial"
#: Files at least this large (bytes) are read back by a second thread while they are copied.
TRAIL_MIN = 4 * CHUNK
#: Destination ranges at most this large (bytes) are read back with ``pread``, larger ones mapped.
MAP_MIN = 256 * 1024

_names = itertools.count()


def _write_all(fd: int, data: memoryview) -> None:
    """Write every byte (a write may take fewer than offered)."""
    while data:
        data = data[os.write(fd, data) :]


class _Writer:
    """Puts the bytes just read from ``fin`` at the same offset of ``fd``: in the kernel with
    ``copy_file_range`` (what ``cp`` does: no pass through this process's memory, half the
    time of read-and-write here), else by writing the buffer that was read.

    The bytes the kernel copies are the source's at the time of the copy, not necessarily
    those hashed a moment before; the destination is hashed again from the file itself, and a
    file whose two digests differ is copied again, so a change in between is caught.
    """

    def __init__(self, fin: int, fd: int) -> None:
        self.fin, self.fd = fin, fd
        self.kernel = hasattr(os, "copy_file_range")

    def put(self, data: memoryview, offset: int) -> None:
        if self.kernel:
            done = 0
            try:
                while done < len(data):
                    n = os.copy_file_range(self.fin, self.fd, len(data) - done, offset + done, offset + done)
                    if n == 0:
                        break  # the source ended early: the read-back digest will differ
                    done += n
                return
            except OSError as error:
                # Across file systems on old kernels, or a file system without it.
                if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP) or done:
                    raise
                self.kernel = False
        os.lseek(self.fd, offset, os.SEEK_SET)
        _write_all(self.fd, data)


def _hash_back(fd: int, digest: Any, start: int, end: int) -> None:
    """Feed the destination's bytes ``[start, end)`` to ``digest``.

    Read through a read-only mapping of the file (straight from the page cache, no copy into a
    buffer) unless the range is small, where a mapping costs more than the copy it saves.
    """
    if end - start <= MAP_MIN:
        view = buffer(1)
        while start < end:
            n = os.preadv(fd, [view[: min(len(view), end - start)]], start)
            if n == 0:
                raise IntegrityError("the destination file is shorter than what was written")
            digest.update(view[:n])
            start += n
        return
    base = start - start % mmap.ALLOCATIONGRANULARITY
    with mmap.mmap(fd, end - base, prot=mmap.PROT_READ, offset=base) as mapped, memoryview(mapped) as view:
        digest.update(view[start - base :])


class _Trailer(threading.Thread):
    """Hashes a destination file by reading it back as far as the copy has written."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True, name="sync-verify")
        self.fd = fd
        self.digest = hashlib.sha256()
        self.error: BaseException | None = None
        self.size_differs = False
        self._written = 0
        self._done = False
        self._cond = threading.Condition()

    def advance(self, written: int) -> None:
        with self._cond:
            self._written = written
            self._cond.notify()

    def finish(self) -> str:
        """Wait for the read-back to reach the end of what was written; its sha256 hex ("" when
        the destination holds fewer or more bytes than were written)."""
        with self._cond:
            self._done = True
            self._cond.notify()
        self.join()
        if self.error is not None:
            raise self.error
        return "" if self.size_differs else self.digest.hexdigest()

    def run(self) -> None:
        offset = 0
        try:
            while True:
                with self._cond:
                    while self._written == offset and not self._done:
                        self._cond.wait()
                    target, done = self._written, self._done
                if offset < target:
                    if os.fstat(self.fd).st_size < target:
                        self.size_differs = True
                        return
                    _hash_back(self.fd, self.digest, offset, target)
                    offset = target
                if done:
                    self.size_differs = os.fstat(self.fd).st_size != offset
                    return
        except BaseException as error:  # re-raised by finish()
            self.error = error


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
        for attempt in (1, 2):
            tmp = partial / f"{os.getpid()}-{next(_names)}"
            try:
                before = src.stat()
                with open(src, "rb", buffering=0) as fin:
                    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
                    try:
                        sha, dest_sha = self._copy_verified(fin.fileno(), fd, before.st_size, throttle)
                    finally:
                        os.close(fd)
                after = src.stat()
                if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
                    raise IntegrityError(f"{src} changed while it was copied; run the sync again")
                if entry.sha256 is not None and sha != entry.sha256:
                    raise IntegrityError(f"{src} changed since it was listed; run the sync again")
                if dest_sha == sha:
                    # Only bytes that read back with the source's digest are put in place.
                    if target.parent not in made_dirs:  # one mkdir per directory, not per file
                        target.parent.mkdir(parents=True, exist_ok=True)
                        made_dirs.add(target.parent)
                    os.replace(tmp, target)
                    done = FileEntry(entry.path, after.st_size, after.st_mtime_ns, sha)
                    return done, target.stat().st_mtime_ns
                tmp.unlink(missing_ok=True)
            except OSError as error:
                tmp.unlink(missing_ok=True)
                raise StorageError(f"copying {entry.path} to {dest_root}: {error}") from error
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            if attempt == 2:
                raise IntegrityError(f"{target} does not match its source after two copies (sha256 differs)")
        raise AssertionError("unreachable")

    @staticmethod
    def _copy_verified(fin: int, fd: int, size: int, throttle: Throttle) -> tuple[str, str]:
        """Copy ``fin`` into ``fd``; (sha256 of the bytes read, sha256 of ``fd`` read back)."""
        digest = hashlib.sha256()
        view = buffer()  # per-thread, reused: no allocation per file or chunk
        writer = _Writer(fin, fd)
        if size < TRAIL_MIN:
            written = 0
            while n := os.readv(fin, [view]):
                digest.update(view[:n])
                writer.put(view[:n], written)
                throttle.consume(n)
                written += n
            if os.fstat(fd).st_size != written:
                return digest.hexdigest(), ""  # cannot match
            back = hashlib.sha256()
            if written:
                _hash_back(fd, back, 0, written)
            return digest.hexdigest(), back.hexdigest()
        trailer = _Trailer(fd)
        trailer.start()
        written = 0
        try:
            while n := os.readv(fin, [view]):
                digest.update(view[:n])
                writer.put(view[:n], written)
                throttle.consume(n)
                written += n
                trailer.advance(written)
        finally:
            back_sha = trailer.finish()
        return digest.hexdigest(), back_sha
