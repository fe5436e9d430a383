"""One-shot gradient-ascent baseline on the run's forget set, measured along the way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from reveal_release.evaluate.attacks import working_copy
from reveal_release.models import LoadedModel
from reveal_release.targets.spec import TargetSpec


def ga_points(total_steps: int) -> list[int]:
    """Where to measure: a quarter, half and all of the steps (distinct, at least 1)."""
    return sorted({max(1, total_steps // 4), max(1, total_steps // 2), total_steps})


def ga_baseline(
    base: LoadedModel,
    spec: TargetSpec,
    forget_rows: Sequence[dict],
    total_steps: int,
    measure: Callable[[LoadedModel], dict[str, Any]],
    train_config: dict[str, Any] | None = None,
    seed: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Plain gradient ascent (no retain loss) in one LoRA round; figures at ga_points().

    The LoRA shape, learning rate, batch and length are the run's Release settings
    (`train_config`), so the baseline differs from the rounds only in its loss and schedule.
    """
    from reveal_release.release.config import ReleaseConfig
    from reveal_release.release.lora import attach_lora
    from reveal_release.release.trainer import train_round

    rows = [r for r in forget_rows if r.get("relevance", 0.0) >= spec.threshold]
    keep = ("rank", "alpha", "lr", "batch_size", "max_length", "max_grad_norm")
    same = {k: v for k, v in (train_config or {}).items() if k in keep}
    if "target_modules" in (train_config or {}):
        same["target_modules"] = tuple(train_config["target_modules"])
    cfg = ReleaseConfig(
        loss="ga", retain_weight=0.0, orth_weight=0.0, steps=total_steps, seed=seed, **same
    )
    work = working_copy(base)
    peft = attach_lora(work.model, cfg, seed=seed)
    work.model = peft
    points: list[dict[str, Any]] = []
    wanted = set(ga_points(total_steps))

    def step_done(step: int, entry: dict) -> None:
        if on_step:
            on_step(step)
        if step in wanted:
            peft.eval()
            points.append({"step": step, "loss": entry["forget"], **measure(work)})
            peft.train()

    result = train_round(peft, work.tokenizer, rows, [], [], cfg, round_=1, on_step=step_done)
    return {
        "steps": total_steps,
        "trained_steps": result.steps,
        "stopped": result.stopped,
        "forget_size": len(rows),
        "lr": cfg.lr,
        "points": points,
        "train_seconds": result.seconds,
    }
