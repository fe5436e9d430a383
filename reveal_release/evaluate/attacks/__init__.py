"""Robustness attacks behind one registry (importing this package fills it)."""

from reveal_release.evaluate.attacks import mia, quantized, relearn, rephrase  # noqa: F401
from reveal_release.evaluate.attacks.base import (
    ATTACKS,
    Attack,
    AttackContext,
    AttackSkipped,
    working_copy,
)

__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackSkipped", "working_copy"]
