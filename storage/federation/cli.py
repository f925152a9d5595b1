"""``scopeflow store …``: the federated store's command line."""

from __future__ import annotations

import typer

app = typer.Typer(help="The federated data store (DataFed-like catalog).", no_args_is_help=True)
