"""The attack interface: each attack tries to bring the forgotten target back, or to detect its
traces, on a copy of the model; one file and one registered name per attack."""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reveal_release.models import LoadedModel
from reveal_release.registry import Registry
from reveal_release.targets.spec import TargetSpec


class AttackSkipped(Exception):
    """The attack cannot run here; the message is the reason the report shows."""


@dataclass
class AttackContext:
    """What every attack may use; `base` and the run's sets can be missing (model-only eval)."""

    spec: TargetSpec
    judge: Any
    probes: list[str]
    forget_rows: list[dict]
    settings: dict[str, Any]
    base: LoadedModel | None = None
    retain_rows: list[dict] = field(default_factory=list)
    cached: Callable[[str, Callable[[], Any]], Any] = field(default=lambda key, fn: fn())
    store: Any = None  # a FigureStore: figures of a model alone (its quantised copies)


class Attack(ABC):
    """One attack: `run` returns its figures for one model, or raises AttackSkipped."""

    description = ""
    on_base = False  # also run on the base model, as the before figure
    uses_forget = False  # its figures depend on the run's forget set
    uses_retain = False  # ... or on its retain set

    @abstractmethod
    def run(self, ctx: AttackContext, loaded: LoadedModel) -> dict[str, Any]:
        """The attack's figures on `loaded` (never changes `loaded` itself)."""


ATTACKS: Registry[type[Attack]] = Registry("attack")


def working_copy(loaded: LoadedModel) -> LoadedModel:
    """A deep copy of the model an attack may change freely."""
    return dataclasses.replace(loaded, model=copy.deepcopy(loaded.model))
