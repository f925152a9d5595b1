"""The media server serves published PNGs, and nothing else."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from scopeflow.errors import InputError
from storage.media import MediaServer, publish_image
from storage.media.publish import PNG_MAGIC

PNG = PNG_MAGIC + b"\x00" * 32


def test_publish_serves_the_bytes_content_addressed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCOPEFLOW_MEDIA_DIR", str(tmp_path))
    with MediaServer(tmp_path) as server:
        monkeypatch.setenv("SCOPEFLOW_MEDIA_URL", server.url)
        url = publish_image(PNG, "Atom overlay, frame 3")
        assert url.startswith(server.url + "/atom-overlay-frame-3-")
        assert publish_image(PNG, "Atom overlay, frame 3") == url  # same bytes, same name
        assert publish_image(PNG + b"\x01", "Atom overlay, frame 3") != url
        reply = httpx.get(url)
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "image/png"
        assert reply.content == PNG
        (tmp_path / "secret.txt").write_text("no")
        for path in ("/media/secret.txt", "/media/../secret.txt", "/media/missing.png", "/etc/passwd"):
            assert httpx.get(server.url.removesuffix("/media") + path).status_code == 404


def test_only_pngs_are_published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCOPEFLOW_MEDIA_DIR", str(tmp_path))
    with pytest.raises(InputError, match="not a PNG"):
        publish_image(b"GIF89a", "x")
