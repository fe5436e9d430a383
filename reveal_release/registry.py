"""Name -> class registries (judges, losses, samplers, update rules), filled by a decorator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from reveal_release.errors import RRError

T = TypeVar("T")


class Registry(Generic[T]):
    """A plain dict of named implementations; a new method is one file and one name."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register an implementation under `name`."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """The implementation called `name`, or a clear error listing the choices."""
        if name not in self._items:
            raise RRError(f"unknown {self.kind} '{name}': choose one of {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
