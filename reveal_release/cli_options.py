"""Build Typer options from config dataclasses, so each option is declared once, on its field."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from reveal_release.options import documented, flag_of


def _parameter(cls: type, f: dataclasses.Field, hints: dict[str, Any]) -> inspect.Parameter:
    meta = f.metadata
    kind = hints[f.name]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if meta.get("parse") is not None:  # given as text on the command line, parsed into kind
        kind = str
        default = meta["show"](default) if meta.get("show") else str(default)
    flag = flag_of(f)
    names = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
    annotation = Annotated[kind, typer.Option(*names, help=meta.get("help") or None)]
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=annotation)  # fmt: skip


def _declared_by(cls: type, name: str) -> int:
    """How far up the class's MRO the field is declared (0: by the class itself)."""
    return next(i for i, c in enumerate(cls.__mro__) if name in vars(c).get("__annotations__", {}))


def config_parameters(cls: type, skip: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One keyword parameter per command-line field: the class's own first, then its bases'."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in documented(cls) if f.metadata.get("cli", True) and f.name not in skip]
    fields.sort(key=lambda f: _declared_by(cls, f.name))
    return [_parameter(cls, f, hints) for f in fields]


def build(cls: type, values: dict[str, Any]) -> Any:
    """The config from command-line values (text fields parsed back into their kind)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    parsed = {}
    for name, value in values.items():
        parse = fields[name].metadata.get("parse")
        parsed[name] = parse(value) if parse is not None and isinstance(value, str) else value
    return cls(**parsed)


def given_on_command_line(ctx: Any, names: set[str]) -> frozenset[str]:
    """The parameters among `names` the user set (command line or environment), not defaults."""
    unset = ("DEFAULT", "DEFAULT_MAP")
    sources = {n: ctx.get_parameter_source(n) for n in names}
    return frozenset(n for n, src in sources.items() if src is not None and src.name not in unset)


CONTEXT = "rr_context"  # the command's Typer context, for where each option's value came from


def with_config(cls: type, name: str = "cfg", skip: tuple[str, ...] = ()) -> Callable:
    """Decorator: the command gains one option per field of `cls` and receives `name=cls(...)`.

    The command's own parameters come first in `--help`, then the config's fields. A command
    with a parameter named `explicit` receives the fields the user gave (not as an option).
    """

    def deco(fn: Callable) -> Callable:
        own = [p for p in inspect.signature(fn).parameters.values() if p.name != name]
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in own]
        extra = config_parameters(cls, skip)
        extra_names = {p.name for p in extra}

        wants_explicit = any(p.name == "explicit" for p in own)
        own = [p for p in own if p.name != "explicit"]

        def command(**kwargs: Any) -> Any:
            ctx = kwargs.pop(CONTEXT)
            cfg = build(cls, {k: kwargs.pop(k) for k in list(kwargs) if k in extra_names})
            if wants_explicit:
                kwargs["explicit"] = given_on_command_line(ctx, extra_names)
            return fn(**kwargs, **{name: cfg})

        context = inspect.Parameter(
            CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context
        )
        params = [context] + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + extra
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__name__, command.__doc__ = fn.__name__, fn.__doc__
        command.__module__ = fn.__module__
        return command

    return deco
