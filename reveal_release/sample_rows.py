"""The schema of a sample set's rows (forget.jsonl, retain.jsonl): what a line must hold."""

from __future__ import annotations

from typing import Any


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_spans(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(s, list) and len(s) == 2 and all(isinstance(x, int) for x in s) for s in v
    )


MAX_TEXT_CHARS = 200_000  # a prompt or an answer (rr writes a pool line and max_new_tokens)
MAX_SET_BYTES = 64 * 2**20  # a sample set file

# key -> (required, check, what it must be)
FIELDS = {
    "prompt": (True, lambda v: isinstance(v, str), "a string"),
    "response": (True, lambda v: isinstance(v, str), "a string"),
    "relevance": (False, _is_number, "a number"),
    "focus": (False, _is_spans, "a list of [start, end] character offsets"),
}


def sample_problem(row: Any) -> str | None:
    """What is wrong with one row of a sample set (None: nothing)."""
    if not isinstance(row, dict):
        return f"is {type(row).__name__}, not an object with prompt and response"
    for key, (required, check, what) in FIELDS.items():
        if key not in row:
            if required:
                return f"has no '{key}'"
        elif not check(row[key]):
            return f"'{key}' must be {what}, not {type(row[key]).__name__}"
    for key in ("prompt", "response"):
        if len(row[key]) > MAX_TEXT_CHARS:
            return f"'{key}' is over {MAX_TEXT_CHARS:,} characters ({len(row[key]):,})"
    return None
