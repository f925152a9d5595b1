"""The catalog: every store operation as a function of a session and the calling principal.

The HTTP routes are thin wrappers over these functions; benchmarks and ``store`` admin
commands may call them directly (same checks, no HTTP).
"""

from storage.federation.catalog.context import Catalog, Ctx, Limits

__all__ = ["Catalog", "Ctx", "Limits"]
