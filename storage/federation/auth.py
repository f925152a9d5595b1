"""Bearer-token authentication: tokens are random, only their sha256 is stored."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from storage.federation.access import Principal
from storage.federation.errors import AuthenticationError
from storage.federation.models import Token, User, utcnow

TOKEN_PREFIX = "sf_"
#: Lifetime of a token issued over the API unless the caller asks for less, in days.
DEFAULT_TOKEN_DAYS = 90
#: Longest lifetime a token may be issued with over the API, in days.
MAX_TOKEN_DAYS = 365


def new_token() -> str:
    """A fresh bearer token (256 random bits, URL-safe)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """The sha256 hex digest stored in place of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, user: User, label: str = "", days: float | None = None) -> str:
    """Create, store (hashed) and return a new token for ``user``, valid ``days`` (None: no end)."""
    token = new_token()
    expires = utcnow() + dt.timedelta(days=days) if days is not None else None
    session.add(Token(user_id=user.id, token_sha256=token_digest(token), label=label, expires=expires))
    return token


def authenticate(session: Session, authorization: str | None) -> Principal:
    """Resolve an ``Authorization: Bearer …`` header to the principal, or raise 401."""
    if not authorization:
        raise AuthenticationError("no bearer token: send 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("the Authorization header must read 'Bearer <token>'")
    row = session.execute(
        select(User.id, User.name, User.is_admin)
        .join(Token, Token.user_id == User.id)
        .where(
            Token.token_sha256 == token_digest(token.strip()),
            or_(Token.expires.is_(None), Token.expires > utcnow()),
        )
    ).first()
    if row is None:
        raise AuthenticationError("unknown, expired or revoked token")
    return Principal(user_id=row.id, name=row.name, is_admin=row.is_admin)
