"""Config fields that carry their own help, flag and check: one source for every `rr` option.

A config dataclass declares each field once with `option(default, "help", check=...)` (as
PEFT's LoraConfig does with field metadata); `validate(self)` in its `__post_init__` checks
every field and raises a one-line error naming the flag; the command line builds its options
from the same fields (`reveal_release.cli_options`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import Field
from typing import Any

from reveal_release.errors import RRError

# A check turns (flag, value) into an error message, or None when the value is fine.
Check = Callable[[str, Any], "str | None"]


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    check: Check | None = None,
    flag: str | None = None,
    cli: bool = True,
    parse: Callable[[str], Any] | None = None,
    show: Callable[[Any], str] | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its help text, its flag (--field-name), a check and a parser.

    `cli=False` keeps a setting out of the command line (it stays a documented field);
    `parse` turns the command line's text into the field's value and `show` the default into
    text (for tuples and other non-scalar fields).
    """
    meta = {"help": help, "check": check, "flag": flag, "cli": cli, "parse": parse, "show": show}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_of(f: Field) -> str:
    """The command-line flag of a field: its own, else --field-name."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def documented(cls: Any) -> Iterator[Field]:
    """The fields of a config class that were declared with option()."""
    return (f for f in dataclasses.fields(cls) if "help" in f.metadata)


def validate(obj: Any) -> None:
    """Check every field against its declared check; the first failure is a one-line error."""
    for f in documented(obj):
        check = f.metadata.get("check")
        value = getattr(obj, f.name)
        if check is None or value is None:
            continue
        message = check(flag_of(f), value)
        if message:
            raise RRError(message)


def _bound(ok: Callable[[Any], bool], text: str) -> Check:
    return lambda flag, v: None if ok(v) else f"{flag} {text}, got {v!r}"


def at_least(n: float) -> Check:
    """value >= n."""
    return _bound(lambda v: v >= n, f"must be at least {n}")


def positive() -> Check:
    """value > 0."""
    return _bound(lambda v: v > 0, "must be positive")


def non_negative() -> Check:
    """value >= 0."""
    return _bound(lambda v: v >= 0, "must be >= 0")


def between(lo: float, hi: float) -> Check:
    """lo <= value <= hi."""
    return _bound(lambda v: lo <= v <= hi, f"must be between {lo} and {hi}")


def fraction() -> Check:
    """0 <= value <= 1."""
    return _bound(lambda v: 0 <= v <= 1, "must be in [0, 1]")


def below_one() -> Check:
    """0 <= value < 1."""
    return _bound(lambda v: 0 <= v < 1, "must be in [0, 1)")


def open_fraction() -> Check:
    """0 < value <= 1."""
    return _bound(lambda v: 0 < v <= 1, "must be in (0, 1]")


def non_empty() -> Check:
    """A non-empty value (a list of names, say)."""
    return _bound(bool, "needs at least one value")


def one_of(what: str, *choices: str) -> Check:
    """value is one of the choices: 'unknown WHAT 'x': choose a or b'."""
    listed = " or ".join(choices) if len(choices) < 3 else ", ".join(choices)
    return lambda flag, v: None if v in choices else f"unknown {what} {v!r}: choose {listed}"


def comma_list(text: str) -> tuple[str, ...]:
    """'a, b,c' -> ('a', 'b', 'c')."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def with_settings(
    cfg: Any, settings: dict[str, Any], explicit: frozenset[str], where: str
) -> tuple[Any, dict[str, Any]]:
    """`cfg` with `settings` (option name -> value, e.g. from a target spec) on the fields the
    user did not set, and what was applied; a name or value that cannot be one is an error."""
    fields = {f.name: f for f in documented(type(cfg)) if f.metadata.get("cli", True)}
    applied = {}
    for key, value in settings.items():
        name = str(key).replace("-", "_")
        f = fields.get(name)
        if f is None:
            raise RRError(f"{where} sets '{key}', which is not an option here: fix or remove it")
        if name in explicit:
            continue
        parse = f.metadata.get("parse")
        if parse is not None and isinstance(value, str):
            value = parse(value)
        elif isinstance(value, list):
            value = tuple(value)
        applied[name] = value
    try:
        return dataclasses.replace(cfg, **applied), applied
    except (TypeError, ValueError) as exc:
        raise RRError(f"{where} has a value of the wrong kind ({exc}): fix it") from None
