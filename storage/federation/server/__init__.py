"""The HTTP service of the store: ``build_app`` makes a FastAPI app; nothing runs at import."""

from storage.federation.server.app import build_app

__all__ = ["build_app"]
