"""Identifiers of the store and the rules for names and paths users hand in.

Records are ``d/<n>``, collections ``c/<n>``. An alias is a short name unique within its
owner's namespace and may be written ``alias`` (the caller's own) or ``user:alias``.
Relative paths (files inside a record, destinations inside a repository) are checked here so
every entry point refuses ``..`` and absolute paths the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from scopeflow.errors import InputError

_ID = re.compile(r"^(?P<kind>[dc])/(?P<n>[1-9][0-9]{0,17})\Z")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}\Z")
_USER = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}\Z")
_NAME_RULE = "1-64 characters, a letter first, then letters, digits, '.', '_', '-'"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._/-]{0,127}\Z")

# The same rules as JSON Schema patterns, stated in the OpenAPI schema (and enforced there
# first), so that what the schema calls valid is what the store accepts.
_N = r"[1-9][0-9]{0,17}"
_A = r"[A-Za-z][A-Za-z0-9._-]{0,63}"
ALIAS_PATTERN = rf"^{_A}$"
USER_PATTERN = rf"^{_A}$"
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9._/-]{0,127}$"
PROJECT_PATTERN = r"^(p/)?[A-Za-z][A-Za-z0-9._/-]{0,127}$"
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:+/-]{0,63}$"
RECORD_REF_PATTERN = rf"^(d/{_N}|{_N}|({_A}:)?{_A})$"
COLLECTION_REF_PATTERN = rf"^(c/{_N}|{_N}|({_A}:)?{_A})$"
GRANT_TARGET_PATTERN = rf"^(p/[A-Za-z][A-Za-z0-9._/-]{{0,127}}|[dc]/{_N}|{_N}|({_A}:)?{_A})$"
#: Text of any kind but NUL (PostgreSQL refuses it in text and jsonb).
TEXT_PATTERN = r"^[^\x00]*$"
_SEG = r"([A-Za-z0-9_+=@,~-]|\.[A-Za-z0-9_+=@,~-])[A-Za-z0-9._+=@,~-]{0,126}"
#: Files inside a record: up to 16 components of ASCII names, none '.' or '..'.
FILE_PATH_PATTERN = rf"^{_SEG}(/{_SEG}){{0,15}}$"

#: Largest record or collection number: ids are INTEGER columns, 32-bit on PostgreSQL. A
#: reference past it names nothing (not found), never a query the database cannot run.
MAX_ID = 2**31 - 1

#: Longest relative path accepted for a file inside a record, in characters.
MAX_PATH_CHARS = 1024


@dataclass(frozen=True)
class Ref:
    """A parsed reference: a numeric id of one kind, or an alias (optionally owner-qualified)."""

    kind: str  # "d" or "c"
    number: int | None = None
    alias: str | None = None
    owner: str | None = None

    def __str__(self) -> str:
        if self.number is not None:
            return f"{self.kind}/{self.number}"
        return f"{self.owner}:{self.alias}" if self.owner else str(self.alias)


def format_id(kind: str, number: int) -> str:
    """``format_id("d", 12) == "d/12"``."""
    return f"{kind}/{number}"


def parse_ref(text: str, kind: str) -> Ref:
    """Parse ``d/12``, ``12``, ``alias`` or ``user:alias`` for an item of ``kind`` ("d" or "c")."""
    text = text.strip()
    m = _ID.match(text)
    if m:
        if m["kind"] != kind:
            want = "record (d/<n>)" if kind == "d" else "collection (c/<n>)"
            raise InputError(f"{text!r} is not a {want} id")
        return Ref(kind, number=int(m["n"]))
    # isascii: str.isdigit() is true for '³' and other digits int() cannot read.
    if text.isascii() and text.isdigit() and 0 < len(text) <= 18 and int(text) > 0:
        return Ref(kind, number=int(text))
    owner, _, alias = text.rpartition(":")
    check_alias(alias)
    if owner:
        check_user_name(owner)
    return Ref(kind, alias=alias, owner=owner or None)


def check_alias(alias: str) -> str:
    """Return ``alias`` if it is a valid alias, else raise InputError naming the rule."""
    if not _ALIAS.match(alias):
        raise InputError(f"invalid alias {alias!r}: use {_NAME_RULE}")
    return alias


def check_user_name(name: str) -> str:
    """Return ``name`` if it is a valid user name, else raise InputError."""
    if not _USER.match(name):
        raise InputError(f"invalid user name {name!r}: use {_NAME_RULE}")
    return name


def check_name(name: str, what: str) -> str:
    """Validate a project, repository or schema name (letters, digits, ``._/-``, 128 max)."""
    if not _NAME.match(name):
        raise InputError(
            f"invalid {what} name {name!r}: use 1-128 characters, a letter first, "
            "then letters, digits, '.', '_', '/', '-'"
        )
    return name


def safe_relative_path(path: str, what: str = "path") -> str:
    """Normalise a relative POSIX path and refuse anything that could leave its root.

    Refused: empty paths, absolute paths, ``..`` components, backslashes, NUL and control
    characters, and paths longer than ``MAX_PATH_CHARS``. Returns the path with ``.`` and
    duplicate slashes removed.
    """
    if not path or not path.strip():
        raise InputError(f"{what} is empty")
    if len(path) > MAX_PATH_CHARS:
        raise InputError(f"{what} is {len(path)} characters long; the limit is {MAX_PATH_CHARS}")
    if any(ord(ch) < 32 for ch in path) or "\\" in path:
        raise InputError(f"{what} {path!r} contains a control character or a backslash")
    pure = PurePosixPath(path)
    if pure.is_absolute():
        raise InputError(f"{what} {path!r} is absolute; give a path relative to the record")
    parts = [p for p in pure.parts if p not in ("", ".")]
    if ".." in parts:
        raise InputError(f"{what} {path!r} contains '..' and would leave its directory")
    if not parts:
        raise InputError(f"{what} {path!r} names no file")
    return "/".join(parts)
