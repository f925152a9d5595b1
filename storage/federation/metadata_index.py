"""Flattening of record metadata into the rows of the search index (``MetadataEntry``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

#: Deepest nesting of metadata indexed; deeper values are stored but not searchable.
MAX_DEPTH = 8
#: Longest key path indexed, in characters.
MAX_KEY_CHARS = 256
#: Strings are indexed by their first this-many characters.
MAX_TEXT_CHARS = 256


def flatten(md: dict[str, Any]) -> Iterator[tuple[str, str, float | None, str | None]]:
    """Yield ``(key, kind, num, text)`` for every scalar leaf of ``md``.

    Keys are dotted paths; list elements yield under their list's key (so searching a list
    means "contains"). Kinds: ``n`` number, ``s`` string, ``b`` boolean, ``z`` null.
    """
    yield from _walk(md, "", 0)


def _walk(value: Any, key: str, depth: int) -> Iterator[tuple[str, str, float | None, str | None]]:
    if depth > MAX_DEPTH or len(key) > MAX_KEY_CHARS:
        return
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _walk(item, f"{key}.{name}" if key else str(name), depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, key, depth + 1)
    elif not key:
        return
    elif value is None:
        yield key, "z", None, None
    elif isinstance(value, bool):  # before int: bool is an int subclass
        yield key, "b", float(value), None
    elif isinstance(value, int | float):
        yield key, "n", float(value), None
    else:
        yield key, "s", None, str(value)[:MAX_TEXT_CHARS]
