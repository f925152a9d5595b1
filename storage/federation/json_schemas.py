"""Validation of JSON Schemas and of metadata against them (jsonschema, Draft 2020-12)."""

from __future__ import annotations

import functools
import json
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

from storage.federation.errors import SchemaValidationError


def check_schema(body: dict[str, Any]) -> None:
    """Refuse a schema that is not itself valid JSON Schema, naming the problem."""
    if not isinstance(body, dict):
        raise SchemaValidationError("a JSON Schema must be a JSON object")
    try:
        Draft202012Validator.check_schema(body)
    except SchemaError as error:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise SchemaValidationError(f"invalid JSON Schema at {where}: {error.message}") from None


@functools.lru_cache(maxsize=256)
def _validator(body_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(body_json))


def validate(md: dict[str, Any], body: dict[str, Any], schema_name: str) -> None:
    """Raise SchemaValidationError naming the first (most relevant) violation of ``body``."""
    validator = _validator(json.dumps(body, sort_keys=True))
    error = best_match(validator.iter_errors(md))
    if error is not None:
        where = "md" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        raise SchemaValidationError(
            f"metadata does not match schema {schema_name!r}: at {where}: {error.message}"
        )
