"""One-shot gradient-ascent baseline on the run's forget set, measured along the way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from reveal_release.evaluate.attacks import working_copy
from reveal_release.models import LoadedModel
from reveal_release.runs import relevant
from reveal_release.targets.spec import TargetSpec


def ga_points(total_steps: int) -> list[int]:
    """Where to measure: a quarter, half and all of the steps (distinct, at least 1)."""
    return sorted({max(1, total_steps // 4), max(1, total_steps // 2), total_steps})


def _settings(train_config: dict[str, Any], steps: int) -> tuple:
    """The run's LoRA shape and optimiser (same module, same lr and batch), GA objective."""
    from reveal_release.train.config import LoraSpec, ObjectiveConfig, OptimConfig

    c = dict(train_config)
    lora = {k: c[k] for k in ("rank", "alpha") if k in c}
    if "target_modules" in c:
        lora["target_modules"] = tuple(c["target_modules"])
    optim = {k: c[k] for k in ("lr", "batch_size", "max_length", "max_grad_norm") if k in c}
    return (
        LoraSpec(**lora),
        OptimConfig(steps=steps, **optim),
        ObjectiveConfig(loss="ga", retain_weight=0.0),
    )


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
    from reveal_release.train import seeds
    from reveal_release.train.loop import run_steps
    from reveal_release.train.lora import attach_lora
    from reveal_release.train.objective import UnlearnObjective

    rows = relevant(list(forget_rows), spec.threshold)
    lora, optim, objective_cfg = _settings(train_config or {}, total_steps)
    work = working_copy(base)
    peft = attach_lora(work.model, lora, seed=seed)
    work.model = peft
    stream = (seeds.batch_stream(seed, 1), seeds.batch_stream(seed, 1, "retain"))
    objective = UnlearnObjective(peft, work.tokenizer, rows, [], objective_cfg, optim, stream)
    points: list[dict[str, Any]] = []
    wanted = set(ga_points(total_steps))

    def step_done(step: int, entry: dict) -> None:
        if on_step:
            on_step(step)
        if step in wanted:
            peft.eval()
            points.append({"step": step, "loss": entry["forget"], **measure(work)})
            peft.train()

    result = run_steps(peft, objective.terms, objective.weights, optim, on_step=step_done)
    return {
        "steps": total_steps,
        "trained_steps": result.steps,
        "stopped": result.stopped,
        "forget_size": len(rows),
        "lr": optim.lr,
        "points": points,
        "train_seconds": result.seconds,
    }
