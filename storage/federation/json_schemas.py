"""Validation of JSON Schemas and of metadata against them (Draft 2020-12).

Metadata is validated by jsonschema-rs with its linear-time regex engine, so a user's
``pattern`` cannot take exponential time (``^(a+)+$``), and with no retrieval of remote
documents: a ``$ref`` must point inside the schema (``#/$defs/...``), never at a URL the
server would fetch. The schema itself is checked against the meta-schema by ``jsonschema``
(clear messages naming the place).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from storage.federation.errors import SchemaValidationError

#: Keywords whose value is a reference to another schema.
_REF_KEYWORDS = ("$ref", "$dynamicRef")


def _refuse_retrieval(uri: str) -> Any:
    raise ValueError(f"remote reference {uri} is not resolved")


def _refs(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    stack = [(node, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in _REF_KEYWORDS and isinstance(value, str):
                    yield f"{path}/{key}", value
                stack.append((value, f"{path}/{key}"))
        elif isinstance(item, list):
            stack.extend((value, f"{path}/{i}") for i, value in enumerate(item))


def check_schema(body: dict[str, Any]) -> None:
    """Refuse a schema that is not valid JSON Schema, refers outside itself, or holds a
    pattern the linear-time engine cannot run (backreferences, look-around), naming the place."""
    if not isinstance(body, dict):
        raise SchemaValidationError("a JSON Schema must be a JSON object")
    try:
        Draft202012Validator.check_schema(body)
    except SchemaError as error:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise SchemaValidationError(f"invalid JSON Schema at {where}: {error.message}") from None
    for where, ref in _refs(body):
        if not ref.startswith("#"):
            raise SchemaValidationError(
                f"invalid JSON Schema at {where or '(root)'}: only references inside the schema "
                f"('#/$defs/...') are allowed, not {ref[:200]!r}; the store fetches nothing"
            )
    _validator(json.dumps(body, sort_keys=True))


@functools.lru_cache(maxsize=256)
def _validator(body_json: str) -> Any:
    try:
        return jsonschema_rs.Draft202012Validator(
            json.loads(body_json),
            retriever=_refuse_retrieval,
            pattern_options=jsonschema_rs.RegexOptions(),
        )
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SchemaValidationError(f"unusable JSON Schema: {first[:300]}") from None


def validate(md: dict[str, Any], body: dict[str, Any], schema_name: str) -> None:
    """Raise SchemaValidationError naming the first violation of ``body`` by ``md``."""
    validator = _validator(json.dumps(body, sort_keys=True))
    for error in validator.iter_errors(md):
        where = "md" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.instance_path)
        raise SchemaValidationError(
            f"metadata does not match schema {schema_name!r}: at {where}: {error.message[:500]}"
        )
