"""``python -m storage.media --dir DIR --host H --port P``: the media server in the foreground."""

from __future__ import annotations

import argparse

from storage.media.publish import media_dir
from storage.media.server import serve_media


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m storage.media", description=__doc__)
    parser.add_argument("--dir", default=None, help="directory of the PNGs (default: $SCOPEFLOW_HOME/media)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    serve_media(args.dir or media_dir(), args.host, args.port)


if __name__ == "__main__":
    main()
