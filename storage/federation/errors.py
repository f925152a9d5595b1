"""Errors of the federated store, each a subclass of the project hierarchy.

The HTTP layer maps each class to one status code (``STATUS``) and the client maps the
status back, so a caller catches the same class whether the catalog ran in-process or
behind HTTP.
"""

from __future__ import annotations

from scopeflow.errors import InputError, NotFoundError, ScopeflowError


class PermissionDeniedError(ScopeflowError, PermissionError):
    """The caller is known but lacks the permission the operation needs (HTTP 403)."""


class AuthenticationError(ScopeflowError, PermissionError):
    """No bearer token, or a token the store does not know (HTTP 401)."""


class ConflictError(InputError):
    """The request collides with what exists: a taken alias, a duplicate name (HTTP 409)."""


class PayloadTooLargeError(InputError):
    """A request body, file or metadata document over the store's limit (HTTP 413)."""


class QuotaExceededError(InputError):
    """A write that would push an allocation over its byte or record quota (HTTP 403).

    Not 507: clients and proxies retry 5xx answers, and a full allocation stays full.
    """


class ChecksumMismatchError(ConflictError):
    """A manifest the client sent disagrees with the bytes the server holds (HTTP 409)."""


class QuerySyntaxError(InputError):
    """A search expression the query language cannot parse (HTTP 400)."""


class SchemaValidationError(InputError):
    """Metadata that does not satisfy the JSON Schema its record names (HTTP 422)."""


#: HTTP status per error class; the first matching class (most specific first) wins.
STATUS: tuple[tuple[type[Exception], int], ...] = (
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (PayloadTooLargeError, 413),
    (SchemaValidationError, 422),
    (QuotaExceededError, 403),
    (QuerySyntaxError, 400),
    (InputError, 400),
)

#: The reverse map used by the client: status code -> error class.
BY_STATUS: dict[int, type[Exception]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: SchemaValidationError,
    400: InputError,
}


def status_of(error: Exception) -> int:
    """The HTTP status code that answers ``error`` (500 when it is not one of ours)."""
    for cls, status in STATUS:
        if isinstance(error, cls):
            return status
    return 500
