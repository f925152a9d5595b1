"""Publish a PNG: write it under the media directory and return the URL a browser loads it from.

Where the images go and which server answers for them:

- ``$SCOPEFLOW_MEDIA_DIR`` (default ``$SCOPEFLOW_HOME/media``) holds the files;
- ``$SCOPEFLOW_MEDIA_URL`` is the base URL of a media server serving that directory
  (``scopeflow up`` starts one and sets both for its workers);
- without it, a ``MediaServer`` is started on a loopback port inside this process on first
  use, so ad-hoc flow runs still get working links (for as long as the process lives).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from pathlib import Path

from scopeflow.config import home
from scopeflow.errors import InputError, StorageError

from .server import MediaServer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_lock = threading.Lock()
_in_process: MediaServer | None = None


def media_dir() -> Path:
    """Directory of the published images."""
    return Path(os.environ.get("SCOPEFLOW_MEDIA_DIR", home() / "media")).resolve()


def media_url() -> str:
    """Base URL under which the images of ``media_dir()`` are served (no trailing slash)."""
    global _in_process
    configured = os.environ.get("SCOPEFLOW_MEDIA_URL")
    if configured:
        return configured.rstrip("/")
    with _lock:
        if _in_process is None or _in_process.root != media_dir():
            # Started on first use, never at import: a process that publishes nothing opens no port.
            _in_process = MediaServer(media_dir()).start()
        return _in_process.url


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:80]
    if not slug:
        raise InputError(f"image name {name!r} has no letters or digits")
    return slug


def publish_image(png: bytes, name: str) -> str:
    """Write ``png`` as ``<slug(name)>-<sha256[:12]>.png`` (atomically) and return its URL.

    The name is content-addressed: the same bytes give the same URL, new bytes a new one,
    so a browser's cache is never stale.
    """
    if not png.startswith(PNG_MAGIC):
        raise InputError(f"image {name!r} is not a PNG (bad signature)")
    root = media_dir()
    filename = f"{_slug(name)}-{hashlib.sha256(png).hexdigest()[:12]}.png"
    target = root / filename
    if not target.exists():
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=root, prefix=".", suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(png)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except OSError as exc:
            raise StorageError(f"cannot write image {target}: {exc.strerror or exc}") from exc
    return f"{media_url()}/{filename}"
