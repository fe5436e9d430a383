"""Update rules behind one registry: how a round turns its forget set into a LoRA module.

An update rule writes round k's module to `adapter_dir` in PEFT format; the round loop then
merges it from that folder, so every rule shares the run format, the resume and the export.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reveal_release.errors import RRError
from reveal_release.registry import Registry
from reveal_release.release.config import ReleaseConfig
from reveal_release.release.trainer import TrainResult


@dataclass
class RoundInputs:
    """Everything an update rule needs for round k."""

    model: Any  # the current model M_{k-1} (earlier rounds merged)
    tokenizer: Any
    forget: Sequence[dict]
    retain: Sequence[dict]
    earlier_a: Sequence[Mapping[str, Any]]  # every earlier round's A matrices
    cfg: ReleaseConfig
    round_: int
    workdir: Path  # DIR/round-k
    on_step: Callable[[int, dict], None] | None = None


UpdateRule = Callable[[RoundInputs, Path], TrainResult]
UPDATES: Registry[UpdateRule] = Registry("update rule")
_UPDATE_MODULES = {"lora": "reveal_release.release.updates", "r2f": "reveal_release.r2f.update"}


def get_update(name: str) -> UpdateRule:
    """The update rule called `name` ('lora', or 'r2f' once its module exists)."""
    module = _UPDATE_MODULES.get(name)
    if module and module != __name__:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if not (exc.name and module.startswith(exc.name)):
                raise  # the rule exists but one of its own imports is missing
            raise RRError(
                f"update rule '{name}' is not available yet (tracked in issue #5): "
                "use --update lora; nothing was run"
            ) from None
    return UPDATES.get(name)


@UPDATES.register("lora")
def lora_update(inp: RoundInputs, adapter_dir: Path) -> TrainResult:
    """O-LoRA: train a fresh module on forget + retain + orthogonality, save it unmerged."""
    from reveal_release.atomic import atomic_dir
    from reveal_release.release.lora import attach_lora, save_adapter
    from reveal_release.release.trainer import train_round

    peft_model = attach_lora(inp.model, inp.cfg, seed=inp.cfg.seed * 1009 + inp.round_)
    try:
        result = train_round(
            peft_model,
            inp.tokenizer,
            inp.forget,
            inp.retain,
            inp.earlier_a,
            inp.cfg,
            round_=inp.round_,
            state_path=inp.workdir / "train-state",
            on_step=inp.on_step,
        )
        with atomic_dir(adapter_dir) as tmp:
            save_adapter(peft_model, tmp)
    finally:
        peft_model.unload()  # give M_{k-1} back unchanged; the loop merges from adapter_dir
    return result
