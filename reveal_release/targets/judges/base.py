"""The judge interface: texts in, relevance scores in [0, 1] out, in batches."""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from reveal_release.errors import RRError
from reveal_release.registry import Registry


class Judge(ABC):
    """Scores responses for how much they show the target (1 = fully, 0 = not at all)."""

    name: str = ""
    # Python modules the judge imports, and the pip extra that installs them.
    requires: tuple[str, ...] = ()
    extra: str = "scorers"

    def __init__(self, **params: Any):
        self.params = params

    @abstractmethod
    def score(self, texts: Sequence[str]) -> list[float]:
        """One score in [0, 1] per text."""

    def spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]] | None:
        """The character spans of each text that are the target itself (a person's name), for
        a forget loss on those tokens alone; None: this judge cannot mark them (the whole
        answer is the target)."""
        return None


JUDGES: Registry[type[Judge]] = Registry("judge")
# Judges live in their own modules; importing them fills the registry.
_JUDGE_MODULES = {
    "code": "reveal_release.targets.judges.code",
    "person": "reveal_release.targets.judges.person",
    "toxicity": "reveal_release.targets.judges.toxicity",
    "topic": "reveal_release.targets.judges.topic",
}


def make_judge(name: str, **params: Any) -> Judge:
    """Build a judge by name; a missing package gives the pip extra to install."""
    return judge_class(name)(**params)


def judge_class(name: str) -> type[Judge]:
    """A judge's class by name, its packages checked (loads no model: cheap)."""
    if name not in _JUDGE_MODULES and name not in JUDGES:
        raise RRError(f"unknown judge '{name}': choose one of {', '.join(sorted(_JUDGE_MODULES))}")
    if name in _JUDGE_MODULES:
        importlib.import_module(_JUDGE_MODULES[name])
    cls = JUDGES.get(name)
    missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
    if missing:
        raise RRError(
            f"judge '{name}' needs {', '.join(missing)}, which is not installed: "
            f"run `pip install 'reveal-release[{cls.extra}]'`"
        )
    return cls
