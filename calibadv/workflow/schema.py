"""The workflow config's JSON schema (``workflow/schemas/config.schema.yaml``), applied.

jsonschema validates but neither fills defaults nor words its errors for a user: this module
does both, so a config error names the dotted key, what is wrong and what the schema allows
(``models.tiny.sftt: unknown key``, ``training.lr: … allowed: a number > 0``) and a typo never
falls back to a default. The relations between keys are checked in
:mod:`calibadv.workflow.validation`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from calibadv.errors import ConfigError
from calibadv.workflow.layout import REPO_ROOT

SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"

_KINDS = {
    "integer": "an integer", "number": "a number", "string": "a string",
    "boolean": "true or false", "array": "a list", "object": "a mapping", "null": "null",
}  # fmt: skip


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def fill_defaults(instance: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """Insert schema defaults depth-first (jsonschema validates but never fills)."""
    if "$ref" in schema:
        ref = schema["$ref"].split("/")[-1]
        schema = root["$defs"][ref]
    if not isinstance(instance, dict) or schema.get("type") not in ("object", None):
        return instance
    for key, sub in (schema.get("properties") or {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            instance[key] = fill_defaults(instance[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in instance:
            if key not in (schema.get("properties") or {}):
                instance[key] = fill_defaults(instance[key], extra, root)
    return instance


def check_schema(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` for the first schema error of ``config`` (shallowest key
    first); an unknown key is reported as ``unknown key a.b.c (allowed here: …)``."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.path), list(e.path)))
    if not errors:
        return
    err = errors[0]
    if err.validator == "additionalProperties":
        raise _unknown_key_error(err)
    raise ConfigError(_schema_error_message(err))


def _dotted(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<config>"


def _unknown_key_error(err: Any) -> ConfigError:
    allowed = sorted((err.schema.get("properties") or {}).keys())
    known = set(allowed)
    bad = sorted(k for k in err.instance if k not in known)
    key = _dotted([*err.path, bad[0]]) if bad else _dotted(err.path)
    return ConfigError(
        f"unknown key {key} in the workflow config"
        + (f" (allowed here: {', '.join(allowed)})" if allowed else "")
    )


def _schema_error_message(err: Any) -> str:
    """``key: what is wrong; allowed: what the schema accepts`` for one jsonschema error."""
    key = _dotted(err.path)
    if err.validator == "required":
        return f"{key}: {err.message}"
    return f"{key}: {err.message}; allowed: {allowed_values(err.schema)}"


def _fmt_bound(value: Any) -> str:
    return repr(value) if not isinstance(value, float) else f"{value:g}"


def allowed_values(schema: dict[str, Any]) -> str:
    """What one schema node accepts, in words: ``a number > 0``, ``an integer in [0, 1]``,
    ``one of 'flat', 'hnsw'``. Error messages quote it as the allowed range."""
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    types = schema.get("type") or []
    types = [types] if isinstance(types, str) else list(types)
    nullable = "null" in types
    kinds = [_KINDS.get(t, t) for t in types if t != "null"]
    text = (" or ".join(kinds) if kinds else "a value") + _bounds(schema) + _constraints(schema)
    return text + (" (or null)" if nullable else "")


def _bounds(schema: dict[str, Any]) -> str:
    """`` in [lo, hi)``, `` > lo``, `` <= hi`` or nothing: a number's range, in words."""
    lo, lo_open = schema.get("minimum"), False
    if "exclusiveMinimum" in schema:
        lo, lo_open = schema["exclusiveMinimum"], True
    hi, hi_open = schema.get("maximum"), False
    if "exclusiveMaximum" in schema:
        hi, hi_open = schema["exclusiveMaximum"], True
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{_fmt_bound(lo)}, {_fmt_bound(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {_fmt_bound(lo)}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {_fmt_bound(hi)}"
    return ""


def _constraints(schema: dict[str, Any]) -> str:
    """The other constraints of a node, in words: multiples, lengths, patterns, sizes."""
    text = ""
    if "multipleOf" in schema:
        text += f", a multiple of {_fmt_bound(schema['multipleOf'])}"
    if "minLength" in schema:
        text += f" of at least {schema['minLength']} character(s)"
    if "pattern" in schema:
        text += f" matching {schema['pattern']}"
    if "minItems" in schema:
        text += f" of at least {schema['minItems']} item(s)"
    if schema.get("uniqueItems"):
        text += " without repeats"
    if "minProperties" in schema:
        text += f" of at least {schema['minProperties']} entr{'y' if schema['minProperties'] == 1 else 'ies'}"
    return text
