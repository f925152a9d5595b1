"""Files replaced atomically (``atomic_write``), bytes written in place (``pwrite_all``), the
threads that run a batch's file writes and encodings (``Beside``, ``thread_pool``), and the
compact JSON a ``zarr.json`` is written as (``json_bytes``)."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import threading
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


_IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 16


# Bytes per write system call at most. On this project's machines (ext4 on a virtio disk, Linux
# page cache) one call that dirties many MiB at once is throttled as a whole: a batch of 32 raw
# 256² frames (8 MiB) took 15.6-16.3 ms in one ``pwritev``, 11-14 ms in calls of 2 MiB, and
# 1.5-1.9 ms in calls of 1 MiB or less, where ``numpy.save`` writes it in 2.6 ms (its own
# writes are 256 KiB each; measured 2026-11-30, idle; ``benchmarks/write_calls.py``).
WRITE_BYTES = 2**20


def pwritev_all(fd: int, buffers: list[bytes], offset: int) -> None:
    """``buffers`` one after another at ``offset``, without joining them first (joining a
    batch's frames copied ~7 MiB into fresh memory for nothing, page faults included), in
    calls of at most ``WRITE_BYTES`` and ``IOV_MAX`` buffers."""
    views = deque(memoryview(b).cast("B") for b in buffers if len(b))
    while views:
        call: list[memoryview] = []
        size = 0
        while views and len(call) < _IOV_MAX and size < WRITE_BYTES:
            view = views.popleft()
            take = min(len(view), WRITE_BYTES - size)
            call.append(view[:take])
            size += take
            if take < len(view):
                views.appendleft(view[take:])
        done = os.pwritev(fd, call, offset)
        offset += done
        if done == size:
            continue
        # A short write: what it left goes first in the next call.
        left = deque(call)
        while done >= len(left[0]):
            done -= len(left.popleft())
        left[0] = left[0][done:]
        views.extendleft(reversed(left))


SPARE = ".scopeflow-spare"  # per directory: the file a replacement is written into, then swapped in


def atomic_write(target: Path, data: bytes, spare: Path | None = None) -> None:
    """Replace ``target`` with ``data`` atomically: readers see the old file or the new one.

    With ``spare`` (a file of the caller's own, reused batch after batch), the bytes are written
    into it and it is swapped with ``target`` (``_exchange``): it then holds the old version,
    overwritten next time. Writing into an existing file and swapping costs ~20 µs against
    ~350 µs for creating a temporary file (measured 2026-11-30): a batch replaces a dozen files.
    Without it, a temporary file is created and swapped in (or, where the system cannot swap,
    renamed over ``target``).
    """
    if spare is not None and _renameat2 is not None:
        fd = os.open(spare, os.O_WRONLY | os.O_CREAT, 0o666)
        try:
            pwrite_all(fd, data, 0)  # not O_TRUNC: truncating makes ext4 flush, as a rename does
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)
        if not _exchange(spare, target):
            os.replace(spare, target)  # a new name: nothing to flush
        return
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            pwrite_all(fd, data, 0)
        finally:
            os.close(fd)
        if _exchange(tmp, target):
            os.unlink(tmp)  # the old file, under the temporary name
        else:
            os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_RENAME_EXCHANGE = 2  # linux/fs.h
_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _exchange(tmp: Path, target: Path) -> bool:
    """Swap ``tmp`` and an existing ``target`` atomically (Linux ``renameat2``); False where the
    target is absent or the system cannot (the caller then renames).

    ext4 flushes a file renamed over another before the rename returns (its ``auto_da_alloc``
    safeguard): 0.4–3 ms a replace here, ~10 µs an exchange (measured 2026-11-30). Readers see
    the old file or the new one either way.
    """
    if _renameat2 is None:
        return False
    at_cwd = -100
    if _renameat2(at_cwd, os.fsencode(tmp), at_cwd, os.fsencode(target), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOENT, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(target))


WRITE_THREADS = 4  # file writes mostly wait on the file system
ENCODE_THREADS = 2  # compression is CPU work: a thread per core of the edge box (2 here)
_POOLS: dict[str, ThreadPoolExecutor] = {}


def thread_pool(role: str, threads: int) -> ThreadPoolExecutor:
    """The module's threads for ``role`` (apart, so a writer waiting on an encoder never
    holds the thread that encoder needs)."""
    pool = _POOLS.get(role)
    if pool is None:
        pool = _POOLS[role] = ThreadPoolExecutor(threads, thread_name_prefix=f"scopeflow-{role}")
    return pool


Job = Callable[[], "Sequence[Job] | None"]


class Beside:
    """Jobs run in turn by one of the module's threads beside the caller's own work: started on
    entering, more added with ``add``; ``run(main, last)`` runs ``main`` in the calling thread,
    which then takes the jobs not yet started. A job may return more jobs, queued for either
    thread. ``last`` runs once every job has finished, in whichever thread finishes the last one
    (while ``main`` may still run), unless a job failed. Leaving the block waits for the other
    thread (so that nothing is still writing when the caller's error handling or lock release
    runs) and raises its first error; after an error in the block, jobs not yet started are
    dropped.

    Jobs must not depend on each other, nor on the caller's work: either thread may run any of
    them. One thread beside the caller: the edge box has two cores.
    """

    def __init__(self, jobs: Sequence[Job] = ()) -> None:
        self._queue: deque[Job] = deque(jobs)
        self._lock = threading.Lock()
        self._running = 0
        self._last: Callable[[], None] | None = None
        self._failed = False
        # The helper's end, told by a flag and an event rather than its future: waiting on a
        # finished future cost 0.3-0.4 ms a batch here (the pool thread's bookkeeping after the
        # job contends for the GIL and the future's lock), checking a flag nothing.
        self._error: BaseException | None = None
        self._over = False
        self._ended = threading.Event()
        thread_pool("write", WRITE_THREADS).submit(self._help)

    def _help(self) -> None:
        try:
            self._drain()
        except BaseException as exc:
            self._error = exc
        finally:
            self._over = True
            self._ended.set()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if self._queue:
                    job: Job | Callable[[], None] = self._queue.popleft()
                elif self._running == 0 and self._last is not None and not self._failed:
                    job, self._last = self._last, None
                else:
                    return
                self._running += 1
            try:
                more = job()
            except BaseException:
                with self._lock:
                    self._failed = True
                    self._running -= 1
                raise
            with self._lock:
                self._queue.extend(more or ())
                self._running -= 1

    def add(self, jobs: Sequence[Job]) -> None:
        """More jobs (run by the other thread if it is still at work, else by ``run``)."""
        with self._lock:
            self._queue.extend(jobs)

    def run(self, main: Callable[[], None], last: Callable[[], None] | None = None) -> None:
        """``main`` in this thread, then the jobs not yet started; ``last`` after every job."""
        with self._lock:
            self._last = last
        main()
        self._drain()

    def __enter__(self) -> Beside:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            with self._lock:
                self._queue.clear()  # the caller failed: nothing more to start
                self._last = None
        if not self._over:
            self._ended.wait()
        if kind is None and self._error is not None:
            raise self._error


def json_bytes(doc: Any) -> bytes:
    # Compact: with ``indent`` the json module falls back to its pure-Python encoder (~10x slower,
    # 6 ms a commit of the dataset's root here); every reader parses it the same.
    return json.dumps(doc, separators=(",", ":")).encode()
