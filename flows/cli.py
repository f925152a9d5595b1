"""The ``scopeflow`` command line."""

from __future__ import annotations

import typer

from storage.federation.cli import app as store_app

app = typer.Typer(help="scopeflow: autonomous microscopy on the edge and in the cloud.", no_args_is_help=True)
app.add_typer(store_app, name="store")


def main() -> None:
    """Entry point of the console script."""
    app()
