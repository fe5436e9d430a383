"""O-LoRA: train a fresh module on forget + retain + orthogonality to earlier rounds (+ L2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reveal_release.atomic import atomic_dir
from reveal_release.parallel import processes
from reveal_release.release.orth import l2_penalty, orth_penalty
from reveal_release.release.updates.base import UPDATES, RoundInputs
from reveal_release.train import seeds
from reveal_release.train.loop import OnStep, TrainResult, run_steps
from reveal_release.train.lora import a_matrices, attach_lora, save_adapter, trainable
from reveal_release.train.objective import UnlearnObjective


def train_module(
    peft_model: Any,
    tokenizer: Any,
    forget: Sequence[dict],
    retain: Sequence[dict],
    earlier_a: Sequence[Mapping[str, Any]],
    cfg: Any,
    round_: int,
    *,
    state_path: Path | None = None,
    on_step: OnStep | None = None,
) -> TrainResult:
    """cfg.steps AdamW steps on round k's attached module; stops early, restored, on a bad loss.
    Under a launcher of several processes each trains on its shard of every batch."""
    stream = (seeds.batch_stream(cfg.seed, round_), seeds.batch_stream(cfg.seed, round_, "retain"))
    sync = processes()
    objective = UnlearnObjective(peft_model, tokenizer, forget, retain, cfg, cfg, stream, sync)
    params = trainable(peft_model)

    def terms(step: int, only: tuple[str, ...] | None = None) -> dict:
        out = objective.terms(step, only)
        if only is not None:  # SAM's second pass: the forget terms alone
            return out
        if cfg.orth_weight > 0 and earlier_a:
            out["orth"] = orth_penalty(a_matrices(peft_model), earlier_a)
        if cfg.l2_weight > 0:
            out["l2"] = l2_penalty(params)
        return out

    weights = {**objective.weights, "orth": cfg.orth_weight, "l2": cfg.l2_weight}
    return run_steps(
        peft_model, terms, weights, cfg, state_path=state_path, on_step=on_step,
        bounded=objective.forget_loss.bounded, sharp=objective.forget_keys,
        masked=(*objective.forget_keys, "forget_t"),
        explode_key=objective.explode_key, sync=sync,
    )  # fmt: skip


@UPDATES.register("lora")
def lora_update(inp: RoundInputs, adapter_dir: Path) -> TrainResult:
    """Train round k's module and save it unmerged (the main process; the others train beside
    it); M_{k-1} comes back unchanged."""
    cfg = inp.cfg
    peft_model = attach_lora(inp.model, cfg, seed=seeds.lora_init(cfg.seed, inp.round_))
    try:
        result = train_module(
            peft_model, inp.tokenizer, inp.forget, inp.retain, inp.earlier_a, cfg, inp.round_,
            state_path=inp.workdir / "train-state", on_step=inp.on_step,
        )  # fmt: skip
        if processes().main:
            with atomic_dir(adapter_dir) as tmp:
                save_adapter(peft_model, tmp)
    finally:
        peft_model.unload()  # the loop merges from adapter_dir
    return result
