"""The update-rule interface: how a round turns its forget set into a LoRA module.

An update rule writes round k's module to `adapter_dir` in PEFT format; the round loop then
merges it from that folder, so every rule shares the run format, the resume and the export.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reveal_release.registry import Registry
from reveal_release.train.loop import TrainResult


@dataclass
class RoundInputs:
    """Everything an update rule needs for round k."""

    model: Any  # the current model M_{k-1} (earlier rounds merged)
    tokenizer: Any
    forget: Sequence[dict]
    retain: Sequence[dict]
    earlier_a: Sequence[Mapping[str, Any]]  # every earlier round's A matrices
    cfg: Any  # the ReleaseConfig
    round_: int
    workdir: Path  # DIR/round-k
    on_step: Callable[[int, dict], None] | None = None


UpdateRule = Callable[[RoundInputs, Path], TrainResult]
UPDATES: Registry[UpdateRule] = Registry("update rule")
