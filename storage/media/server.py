"""A read-only HTTP server for the PNGs under one directory (loopback by default).

Only flat names ending in ``.png`` are served; anything else is a 404, so the server
cannot be used to read other files. Responses carry ``Cache-Control: immutable`` because
published names are content-addressed (a new figure is a new name).
"""

from __future__ import annotations

import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from scopeflow.errors import ServiceError

#: Names ``publish_image`` writes: lower-case words, dashes, dots; ``.png`` at the end.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,200}\.png$")


def _handler_for(root: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "scopeflow-media/1"

        def _send(self, status: HTTPStatus, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            # The Prefect UI is served from another port: let it load the images.
            self.send_header("Access-Control-Allow-Origin", "*")
            if status == HTTPStatus.OK and content_type == "image/png":
                self.send_header("Cache-Control", "public, max-age=31536000, immutable")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/health", "/api/health"):
                self._send(HTTPStatus.OK, b"ok")
                return
            name = path.removeprefix("/media/").lstrip("/")
            if not NAME_RE.match(name):
                self._send(HTTPStatus.NOT_FOUND, b"not found")
                return
            try:
                body = (root / name).read_bytes()
            except (FileNotFoundError, IsADirectoryError):
                self._send(HTTPStatus.NOT_FOUND, b"not found")
                return
            self._send(HTTPStatus.OK, body, "image/png")

        def do_HEAD(self) -> None:
            self.do_GET()  # _send leaves the body out for HEAD

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per image request would drown the worker logs

    return Handler


class MediaServer:
    """Serves ``root``'s PNGs at ``http://host:port/media/<name>``; ``port`` 0 picks a free one."""

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._httpd = ThreadingHTTPServer((host, port), _handler_for(self.root))
        except OSError as exc:
            raise ServiceError(f"cannot serve media on {host}:{port}: {exc.strerror or exc}") from exc
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the images (``<url>/<name>``)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/media"

    def start(self) -> MediaServer:
        """Serve on a daemon thread of this process."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="scopeflow-media", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the foreground (``python -m storage.media``) until interrupted."""
        try:
            self._httpd.serve_forever()
        finally:
            self._httpd.server_close()

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> MediaServer:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_media(root: str | Path, host: str = "127.0.0.1", port: int = 8766) -> None:
    """Run the media server in the foreground."""
    server = MediaServer(root, host, port)
    print(f"serving {server.root} at {server.url}", flush=True)
    server.serve_forever()
