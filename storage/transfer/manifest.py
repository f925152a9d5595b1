"""File manifests: relative path, size (bytes), mtime (ns) and sha256 of every file in a tree."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

#: Read size for hashing and copying, in bytes.
CHUNK = 1 << 22
#: Names the sync machinery keeps inside trees; never part of a manifest.
RESERVED_PREFIX = ".scopeflow-"


@dataclass(frozen=True)
class FileEntry:
    """One file: ``path`` relative to its tree (POSIX), ``size`` bytes, ``mtime_ns``, ``sha256`` hex.

    ``sha256`` is None until computed (a new file is hashed while it is copied).
    """

    path: str
    size: int
    mtime_ns: int
    sha256: str | None = None


_local = threading.local()


def buffer(slot: int = 0) -> memoryview:
    """A ``CHUNK``-byte buffer private to the calling thread, reused across files.

    Allocating (and zeroing) a fresh buffer per file costs more than copying a small chunk file.
    ``slot`` picks one of the thread's buffers (a copy reads the destination back into another).
    """
    views = getattr(_local, "views", None)
    if views is None:
        views = _local.views = {}
    view = views.get(slot)
    if view is None:
        view = views[slot] = memoryview(bytearray(CHUNK))
    return view


def sha256_file(path: Path) -> str:
    """sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    view = buffer()
    buf = view
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative POSIX path, stat) of every regular file under ``root``, sorted per directory.

    Symlinks are not followed (a link out of a dataset would copy foreign bytes); the sync
    machinery's own ``.scopeflow-*`` entries are skipped.
    """
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            if entry.name.startswith(RESERVED_PREFIX):
                continue
            rel = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                subdirs.append((Path(entry.path), rel + "/"))
            elif entry.is_file(follow_symlinks=False):
                yield rel, entry.stat(follow_symlinks=False)
        stack.extend(reversed(subdirs))


def build_manifest(
    root: Path, known: Mapping[str, FileEntry] | None = None, hash_new: bool = True
) -> dict[str, FileEntry]:
    """The manifest of ``root``.

    A file whose size and mtime match its ``known`` entry keeps that entry's sha256 without
    being read again; others are hashed (or left with ``sha256=None`` when ``hash_new`` is
    False, for callers that hash while copying).
    """
    known = known or {}
    out: dict[str, FileEntry] = {}
    for rel, st in walk(root):
        prior = known.get(rel)
        if (
            prior is not None
            and prior.size == st.st_size
            and prior.mtime_ns == st.st_mtime_ns
            and prior.sha256
        ):
            out[rel] = prior
        else:
            sha = sha256_file(root / rel) if hash_new else None
            out[rel] = FileEntry(rel, st.st_size, st.st_mtime_ns, sha)
    return out
