"""A real instrument's output: image files that vendor software writes into a folder.

Each file is ingested once, in order of modification time. A file is read only once its
size and modification time have stood still for ``settle`` seconds, so one still being
written is not read half-way; a file that cannot be read is skipped with a warning and
tried again later, never a crash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow.errors import InputError, WaitTimeoutError
from scopeflow.frame import Frame

log = logging.getLogger(__name__)

SUFFIXES = (".npy", ".tif", ".tiff", ".dm3", ".dm4", ".emd", ".hspy", ".ser", ".mrc")


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float
    failures: int = 0
    next_try: float = 0.0


class FolderWatcher:
    """Implements ``Instrument`` over a directory of image files (.npy, .tif, rosettasciio formats)."""

    kind = "folder"

    def __init__(
        self,
        folder: str | Path,
        *,
        pixel_size: float | None = None,
        settle: float = 0.5,
        timeout: float = 60.0,
        poll: float = 0.1,
        name: str | None = None,
        report: Callable[[str], None] | None = None,
        report_every: float = 10.0,
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"watched folder {self.folder} does not exist or is not a directory")
        self.pixel_size = pixel_size
        self.settle = settle
        self.timeout = timeout
        self.poll = poll
        self.name = name or f"folder:{self.folder.name}"
        # Waiting is said, not silent: what is awaited, every ``report_every`` seconds.
        self.report = report or log.info
        self.report_every = report_every
        self._ingested: set[str] = set()
        self._seen: dict[str, _Seen] = {}
        self._last: dict[str, Any] = {}

    def resume(self, sources: list[str]) -> None:
        """Mark files already stored in the dataset as ingested."""
        self._ingested.update(sources)

    def state(self) -> dict[str, Any]:
        """Where the watcher looks (for provenance and resume checks)."""
        return {"name": self.name, "kind": self.kind, "folder": str(self.folder.resolve())}

    def conditions(self, index: int) -> dict[str, Any]:
        """Conditions of the last ingested file (a folder knows no future)."""
        return dict(self._last)

    def ready(self) -> list[Path]:
        """Files not yet ingested whose size and mtime have been stable for ``settle`` s."""
        now = time.monotonic()
        out = []
        try:
            entries = list(self.folder.iterdir())
        except OSError as exc:
            log.warning("cannot list %s: %s", self.folder, exc)
            return []
        for path in entries:
            name = path.name
            if name in self._ingested or name.startswith(".") or path.suffix.lower() not in SUFFIXES:
                continue
            try:
                st = path.stat()
            except OSError:
                continue  # vanished between listing and stat
            seen = self._seen.get(name)
            if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
                self._seen[name] = _Seen(
                    st.st_size, st.st_mtime_ns, now, *(seen.failures, seen.next_try) if seen else ()
                )
                continue
            if now - seen.since >= self.settle and now >= seen.next_try and st.st_size > 0:
                out.append((st.st_mtime_ns, name, path))
        return [p for _, _, p in sorted(out)]

    def acquire(self, index: int) -> Frame:
        """The next new, complete file as a frame; waits up to ``timeout`` s for one."""
        from .readers import read_image

        started = time.monotonic()
        deadline = started + self.timeout
        next_report = started + self.report_every
        while True:
            for path in self.ready():
                try:
                    image, pixel_size, metadata = read_image(path)
                except (InputError, OSError, ValueError) as exc:
                    seen = self._seen[path.name]
                    seen.failures += 1
                    seen.next_try = time.monotonic() + min(30.0, self.settle * 2**seen.failures)
                    log.warning("skipping %s for now (attempt %d): %s", path.name, seen.failures, exc)
                    continue
                self._ingested.add(path.name)
                return self._frame(index, path, image, pixel_size, metadata)
            now = time.monotonic()
            if now >= deadline:
                raise WaitTimeoutError(
                    f"no new complete image file ({', '.join(SUFFIXES)}) appeared in {self.folder} within "
                    f"{self.timeout:g} s for frame {index}; the frames stored so far are kept (re-run to resume)"
                )
            if now >= next_report:
                self.report(self._waiting(index, now - started, deadline - now))
                next_report = now + self.report_every
            time.sleep(self.poll)

    def _waiting(self, index: int, waited: float, left: float) -> str:
        """What the watcher waits for, and what it sees that it cannot take yet."""
        settling = [n for n in self._seen if n not in self._ingested]
        seen = f"; not yet complete or readable: {', '.join(sorted(settling)[:5])}" if settling else ""
        return (
            f"waiting for frame {index}: a new {'/'.join(SUFFIXES)} file in {self.folder} "
            f"({waited:.0f} s so far, {left:.0f} s left){seen}"
        )

    def _frame(
        self, index: int, path: Path, image: np.ndarray, pixel_size: float | None, metadata: dict[str, Any]
    ) -> Frame:
        size = pixel_size or self.pixel_size
        if size is None:
            log.warning("%s carries no pixel size and none was given (--pixel-size); storing NaN", path.name)
        conditions = {
            k: v for k, v in metadata.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)
        }
        self._last = conditions
        mtime = np.datetime64(path.stat().st_mtime_ns, "ns")
        return Frame(
            index=index,
            image=image.astype(np.float32, copy=False),
            pixel_size=float(size) if size else float("nan"),
            time=mtime,
            conditions=conditions,
            source=path.name,
        )
