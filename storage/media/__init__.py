"""Figures for the Prefect UI: PNGs written to a media directory and served over HTTP on loopback.

Prefect image artifacts hold a URL only, so the images must live somewhere a browser can
reach. ``publish_image`` writes the PNG (content-addressed, atomic) and returns its URL;
``MediaServer`` is the small read-only HTTP server behind that URL.
"""

from storage.media.publish import media_dir, media_url, publish_image
from storage.media.server import MediaServer, serve_media

__all__ = ["MediaServer", "media_dir", "media_url", "publish_image", "serve_media"]
