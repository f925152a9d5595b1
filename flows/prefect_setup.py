"""Embedded defaults for Prefect, applied before Prefect is imported.

With no ``PREFECT_API_URL`` the flows run against Prefect's ephemeral API with its
database under the scopeflow home; a user's own settings always win.
"""

from __future__ import annotations

import os

from scopeflow.config import home

DEFAULTS = {
    # Telemetry would hold the SQLite database while flows write to it.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def configure_embedded() -> None:
    """Set Prefect's environment defaults (never overriding the user's)."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    if "PREFECT_API_URL" not in os.environ and "PREFECT_HOME" not in os.environ:
        prefect_home = home() / "prefect"
        # Prefect creates only the last level of its home; the server then fails to start.
        prefect_home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(prefect_home)
