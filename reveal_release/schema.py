"""Shape checks for JSON that rr reads back from a file, so a damaged file is named, with the
key that is wrong, before any of it is used.

A schema is a type or a tuple of types (`NUMBER`: int or float, never bool), a dict of the keys
an object must have (a key ending in "?" may be missing; other keys are allowed), a list of one
schema (every item), or `Each(schema)` (an object whose every value has that schema).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reveal_release.errors import RRError

NUMBER = (int, float)
OPTIONAL_NUMBER = (int, float, type(None))
WHOLE = "the file"  # how a message names the top level


@dataclass(frozen=True)
class Each:
    """An object used as a mapping: every value has `schema`."""

    schema: Any


def _name(kind: Any) -> str:
    if isinstance(kind, tuple):
        number = all(k in kind for k in NUMBER)
        rest = [_name(k) for k in kind if not (number and k in NUMBER)]
        return " or ".join((["a number"] if number else []) + rest)
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer",
             float: "a number", bool: "true or false", type(None): "null"}  # fmt: skip
    return names.get(kind, getattr(kind, "__name__", str(kind)))


def _is(value: Any, kind: Any) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds)


def problem(value: Any, schema: Any, where: str = WHOLE) -> str | None:
    """What is wrong with `value` against `schema` (naming the key path), or None."""
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return f"{where} must be an object, not {type(value).__name__}"
        for key, sub in schema.items():
            name = key.rstrip("?")
            if name not in value:
                if key.endswith("?"):
                    continue
                return f"{where} has no '{name}'"
            found = problem(value[name], sub, name if where == WHOLE else f"{where}.{name}")
            if found:
                return found
        return None
    if isinstance(schema, list):
        if not isinstance(value, list):
            return f"{where} must be a list, not {type(value).__name__}"
        for i, item in enumerate(value):
            found = problem(item, schema[0], f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(schema, Each):
        if not isinstance(value, dict):
            return f"{where} must be an object, not {type(value).__name__}"
        for key, item in value.items():
            found = problem(item, schema.schema, f"{where}.{key}")
            if found:
                return found
        return None
    if not _is(value, schema):
        return f"{where} must be {_name(schema)}, not {type(value).__name__}"
    return None


def read_json(path: Path, schema: Any, fix: str) -> Any:
    """A JSON file checked against `schema`; one RRError naming the file, the key and `fix`
    (what to do) when it cannot be read, is not JSON or has the wrong shape."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RRError(f"{path} is missing: {fix}") from None
    except UnicodeDecodeError:
        raise RRError(f"{path} is not UTF-8 text: {fix}") from None
    except json.JSONDecodeError as exc:
        raise RRError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}): {fix}") from None
    except OSError as exc:
        raise RRError(f"cannot read {path} ({exc.strerror or exc}): {fix}") from None
    return check(value, schema, path, fix)


def check(value: Any, schema: Any, path: Path, fix: str) -> Any:
    """`value` (read from `path`) when it has the shape `schema`; else one RRError naming the
    file and the key, and `fix`."""
    found = problem(value, schema)
    if found:
        top = found.removeprefix(f"{WHOLE} ")  # "FILE has no 'x'", not "FILE: the file has..."
        raise RRError(f"{path} {top}: {fix}" if top != found else f"{path}: {found}: {fix}")
    return value
