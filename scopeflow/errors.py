"""One error hierarchy for the whole project.

Each error also inherits the matching built-in, so callers that only know
the standard library (``except ValueError``) still catch ours.
"""

from __future__ import annotations


class ScopeflowError(Exception):
    """Root of every error scopeflow raises on purpose."""


class InputError(ScopeflowError, ValueError):
    """Input that cannot be used: wrong shape, dtype, NaNs, malformed metadata."""


class ShapeMismatchError(InputError):
    """Data whose shape or dtype does not match what is already stored."""


class NotFoundError(ScopeflowError, FileNotFoundError):
    """A file, dataset, record or model version that does not exist."""


class IntegrityError(ScopeflowError):
    """Stored bytes that do not match their recorded checksum."""


class StorageError(ScopeflowError, OSError):
    """The disk refused a write (full, read-only, permission denied)."""


class ServiceError(ScopeflowError, ConnectionError):
    """A server we depend on is unreachable or answered with an error."""


class WaitTimeoutError(ScopeflowError, TimeoutError):
    """Nothing arrived within the time allowed (a watched folder, a server)."""


class TerminatedError(ScopeflowError):
    """The process was asked to stop (SIGTERM); what was committed stays."""
