"""The journal of a sync: which files the destination is known to hold, verified, and any task
still in flight. Appended one line per verified file, so a sync killed at any point resumes
from its last line; rewritten compactly when a sync completes.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scopeflow.config import home
from storage.transfer.manifest import FileEntry


@dataclass(frozen=True)
class Verified:
    """A file confirmed at the destination: the source stat it came from and the destination's mtime."""

    sha256: str
    size: int
    src_mtime_ns: int
    dest_mtime_ns: int | None  # None where the backend cannot see destination times (Globus)


def default_state_dir() -> Path:
    """Where sync journals live: ``$SCOPEFLOW_HOME/sync-state``."""
    return home() / "sync-state"


class SyncState:
    """The journal for one (backend, destination) pair. Thread-safe appends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.verified: dict[str, Verified] = {}
        self.pending: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._fh: Any = None
        self._load()

    @classmethod
    def for_destination(cls, backend: str, dest: str, state_dir: Path | None = None) -> SyncState:
        """The journal of ``dest`` under ``state_dir`` (default ``default_state_dir()``)."""
        key = hashlib.sha256(f"{backend}\0{dest}".encode()).hexdigest()[:24]
        directory = state_dir or default_state_dir()
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / f"{backend}-{key}.jsonl")

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill: everything before it stands
                self._apply(item)

    def _apply(self, item: dict[str, Any]) -> None:
        op = item.get("op")
        if op == "ok":
            self.verified[item["path"]] = Verified(
                item["sha256"], item["size"], item["src_mtime_ns"], item.get("dest_mtime_ns")
            )
        elif op == "drop":
            self.verified.pop(item["path"], None)
        elif op == "pending":
            self.pending = item
        elif op == "settled":
            self.pending = None

    def _append(self, item: dict[str, Any]) -> None:
        with self._lock:
            if self._fh is None:
                self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across appends
            self._fh.write(json.dumps(item, separators=(",", ":")) + "\n")
            # Flush to the OS per line: a killed process loses nothing already written.
            self._fh.flush()
            self._apply(item)

    def mark_verified(self, entry: FileEntry, dest_mtime_ns: int | None) -> None:
        """Record that ``entry`` (sha256 set) is at the destination, verified."""
        assert entry.sha256 is not None
        self._append(
            {
                "op": "ok",
                "path": entry.path,
                "sha256": entry.sha256,
                "size": entry.size,
                "src_mtime_ns": entry.mtime_ns,
                "dest_mtime_ns": dest_mtime_ns,
            }
        )

    def drop(self, path: str) -> None:
        """Forget a file (it failed verification at the destination)."""
        if path in self.verified:
            self._append({"op": "drop", "path": path})

    def set_pending(self, task_id: str, paths: list[str]) -> None:
        """Remember a submitted task (Globus) so a resumed sync waits for it instead of resubmitting."""
        self._append({"op": "pending", "task_id": task_id, "paths": paths})

    def settle(self) -> None:
        """The pending task is finished (succeeded or given up)."""
        self._append({"op": "settled"})

    def known_entries(self) -> dict[str, FileEntry]:
        """Verified files as source-side manifest entries (lets the source skip rehashing)."""
        return {p: FileEntry(p, v.size, v.src_mtime_ns, v.sha256) for p, v in self.verified.items()}

    def compact(self, keep: set[str]) -> None:
        """Rewrite the journal with one line per file still in the source tree."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                for path, v in sorted(self.verified.items()):
                    if path in keep:
                        f.write(
                            json.dumps(
                                {
                                    "op": "ok",
                                    "path": path,
                                    "sha256": v.sha256,
                                    "size": v.size,
                                    "src_mtime_ns": v.src_mtime_ns,
                                    "dest_mtime_ns": v.dest_mtime_ns,
                                },
                                separators=(",", ":"),
                            )
                            + "\n"
                        )
                if self.pending is not None:
                    f.write(json.dumps(self.pending) + "\n")
            os.replace(tmp, self.path)
            self.verified = {p: v for p, v in self.verified.items() if p in keep}

    def close(self) -> None:
        """Close the journal file."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
