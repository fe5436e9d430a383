"""The optimiser loop every trainer shares: AdamW on a LoRA module, guards, checkpoints.

A trainer hands it a function that returns the step's loss terms (name -> scalar tensor) and
their weights. The loop sums them, steps AdamW with gradient clipping, and stops the run with
the last good weights when the loss, a gradient or a weight stops being finite, or when the
`explode_key` term (the retain loss) grows past EXPLODE_FACTOR x its first value.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reveal_release.parallel import Processes
from reveal_release.train.checkpoint import load_state, save_state
from reveal_release.train.config import OptimConfig
from reveal_release.train.disruption import DisruptionMask
from reveal_release.train.lora import trainable

# A retain loss this many times its first value (and 2 nats above it) counts as exploding.
EXPLODE_FACTOR = 10.0

StepTerms = Callable[..., dict[str, Any]]  # (step, only=None) -> {term name: scalar tensor}
OnStep = Callable[[int, dict], None]


@dataclass
class TrainResult:
    """What one training run did (saved as a round's train-result.json)."""

    steps: int
    stopped: str | None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0

    def last(self, key: str) -> float | None:
        """The last logged value of a loss term."""
        return self.history[-1].get(key) if self.history else None


def converged(history: Sequence[dict], cfg: OptimConfig) -> bool:
    """The forget loss stayed under cfg.converge x its first value for cfg.patience steps."""
    if cfg.converge <= 0 or len(history) < cfg.patience + 1:
        return False
    key = "forget" if "forget" in history[0] else "forget_q"
    first = history[0][key]
    return first > 0 and all(h[key] < cfg.converge * first for h in history[-cfg.patience :])


class _Guard:
    """Why a step must not be taken (non-finite loss, exploding retain loss), or None."""

    def __init__(self, explode_key: str, history: Sequence[dict]):
        self.key = explode_key
        self.first = next((h[explode_key] for h in history if h.get(explode_key) is not None), None)

    def before_step(self, step: int, loss: float, values: Mapping[str, float]) -> str | None:
        if not math.isfinite(loss):
            return f"non-finite loss at step {step + 1}"
        if self.key in values:
            value = values[self.key]
            self.first = value if self.first is None else self.first
            if value > max(EXPLODE_FACTOR * self.first, self.first + 2.0):
                return (
                    f"{self.key} loss exploded at step {step + 1} "
                    f"({value:.2f}, first {self.first:.2f})"
                )
        return None


def _snapshot(params: Mapping[str, Any]) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in params.items()}


def _restore(params: Mapping[str, Any], snap: Mapping[str, Any]) -> None:
    import torch

    with torch.no_grad():
        for n, p in params.items():
            p.copy_(snap[n])


def _clip_and_step(
    params: Mapping[str, Any], optimizer: Any, max_norm: float, step: int
) -> tuple[float, str | None]:
    """One AdamW update with clipping; (gradient norm, why it stopped or None)."""
    import torch

    norm = float(torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm))
    if not math.isfinite(norm):
        return norm, f"non-finite gradient at step {step + 1}"
    optimizer.step()
    if not all(torch.isfinite(p).all() for p in params.values()):
        return norm, f"non-finite weights after step {step + 1}"
    return norm, None


def sam_gradients(
    params: Mapping[str, Any],
    step_terms: StepTerms,
    terms: Mapping[str, Any],
    weights: Mapping[str, float],
    step: int,
    rho: float,
    sharp: tuple[str, ...],
    sync: Processes | None = None,
) -> None:
    """Accumulate into .grad: the `sharp` terms' gradient at theta + rho g/|g| (SAM, Foret et
    al. 2021, applied to the forget loss as Fan et al. 2025 do) and the others' at theta.
    With several processes g is their mean, so every process perturbs the same way."""
    import torch

    plist = list(params.values())
    rest = [weights[k] * v for k, v in terms.items() if k not in sharp]
    if rest and any(t.requires_grad for t in rest):
        sum(rest).backward()
    flat = sum(weights[k] * v for k, v in terms.items() if k in sharp)
    grads = torch.autograd.grad(flat, plist, allow_unused=True)
    grads = (sync or Processes()).mean_list(grads)
    norm = torch.sqrt(sum((g**2).sum() for g in grads if g is not None)).clamp(min=1e-12)
    saved = [p.detach().clone() for p in plist]
    with torch.no_grad():
        for p, g in zip(plist, grads, strict=True):
            if g is not None:
                p.add_(rho * g / norm)
    try:
        moved = step_terms(step, only=sharp)
        sum(weights[k] * v for k, v in moved.items()).backward()
    finally:
        with torch.no_grad():
            for p, s in zip(plist, saved, strict=True):
                p.copy_(s)  # exactly the weights before the perturbation


@contextmanager
def _training(model: Any, checkpointing: bool) -> Iterator[None]:
    """The model in training mode (with gradient checkpointing if asked), then back in eval
    mode without it, however the steps end."""
    model.train()
    recompute(model, checkpointing)
    try:
        yield
    finally:
        recompute(model, False)
        model.eval()


def recompute(model: Any, on: bool) -> None:
    """Turn gradient checkpointing on or off on the transformers model under any PEFT wrapper."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(inner, "supports_gradient_checkpointing", False):
        return
    if on:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif inner.is_gradient_checkpointing:
        inner.gradient_checkpointing_disable()


def _gradients(
    cfg: OptimConfig,
    mask: DisruptionMask | None,
    params: Mapping[str, Any],
    step_terms: StepTerms,
    terms: Mapping[str, Any],
    weights: Mapping[str, float],
    step: int,
    loss: Any,
    sharp: tuple[str, ...],
    sync: Processes,
) -> dict[str, float]:
    """Set .grad by the configured rule (SAM, disruption mask, or plain), averaged over the
    processes when there are several; what it logs."""
    logged = {}
    if cfg.sam_rho > 0:
        sam_gradients(params, step_terms, terms, weights, step, cfg.sam_rho, sharp, sync)
    elif mask is not None:
        mask.gradients(params, terms, weights)
        logged = {"mask_kept": mask.kept}
    else:
        loss.backward()
    sync.mean_grads(params.values())
    return logged


def _figures(
    terms: Mapping[str, Any], weights: Mapping[str, float], sync: Processes
) -> tuple[Any, float, dict[str, float]]:
    """The step's summed loss (a tensor), its value and each term's, as the processes' mean."""
    loss = sum(weights[k] * v for k, v in terms.items())
    values = {k: float(v.detach()) for k, v in terms.items()}
    values = sync.mean_values({**values, "loss": float(loss.detach())})
    return loss, values.pop("loss"), values


def _at_checkpoint(done: int, cfg: OptimConfig) -> bool:
    """Whether the training state is saved after `done` steps (not after the last one)."""
    return done % cfg.checkpoint_every == 0 and done < cfg.steps


def _start(
    model: Any, cfg: OptimConfig, masked: tuple[str, ...], state_path: Path | None
) -> tuple[dict[str, Any], Any, DisruptionMask | None, int, list[dict]]:
    """The trainable parameters, AdamW, the gradient rule's mask, and the step and history to
    go on from (a saved state's, or 0 and [])."""
    import torch

    params = trainable(model)
    optimizer = torch.optim.AdamW(params.values(), lr=cfg.lr, weight_decay=0.0)
    mask = DisruptionMask(params, masked) if cfg.mask == "disruption" else None
    step0, history = load_state(state_path, params, optimizer, mask) if state_path else (0, [])
    return params, optimizer, mask, step0, history


def run_steps(
    model: Any,
    step_terms: StepTerms,
    weights: Mapping[str, float],
    cfg: OptimConfig,
    *,
    state_path: Path | None = None,
    on_step: OnStep | None = None,
    bounded: bool = False,
    explode_key: str = "retain",
    sharp: tuple[str, ...] = ("forget",),
    masked: tuple[str, ...] = (),
    sync: Processes | None = None,
) -> TrainResult:
    """cfg.steps AdamW steps on the model's trainable parameters; resumable from state_path.

    With cfg.sam_rho > 0 the `sharp` terms' gradients are taken SAM's way (sam_gradients);
    step_terms must then accept `only=` (the terms to compute). With cfg.mask "disruption" the
    `masked` terms' gradients pass only where they agree with retaining (DisruptionMask).
    With `sync` of several processes, each step's gradients and logged losses are their mean
    (each process computes its shard of the batch) and only the main process saves state.
    """
    sync = sync or Processes()
    start = time.perf_counter()
    params, optimizer, mask, step0, history = _start(model, cfg, masked, state_path)
    with _training(model, cfg.gradient_checkpointing):
        good, guard = _snapshot(params), _Guard(explode_key, history)
        stopped, kept = None, step0
        for step in range(step0, cfg.steps):
            terms = step_terms(step)
            loss, total, values = _figures(terms, weights, sync)
            stopped = guard.before_step(step, total, values)
            if stopped:
                kept = max(step - 1, step0)  # theta_step is broken: back to the weights before
                break
            good = _snapshot(params)
            optimizer.zero_grad(set_to_none=True)
            values |= _gradients(
                cfg, mask, params, step_terms, terms, weights, step, loss, sharp, sync
            )
            norm, stopped = _clip_and_step(params, optimizer, cfg.max_grad_norm, step)
            if stopped:
                kept = step
                break
            entry = {"step": step + 1, "loss": total, **values, "grad_norm": norm}
            history.append(entry)
            if on_step:
                on_step(step + 1, entry)
            if bounded and converged(history, cfg):
                break
            if state_path and sync.main and _at_checkpoint(step + 1, cfg):
                save_state(
                    state_path, step + 1, params, optimizer, history, mask and mask.tensors()
                )
        if stopped:
            # Back to the last weights whose loss was finite and in bounds (the first weights of
            # this attempt when a resumed run fails at once).
            _restore(params, good)
            history = history[: max(kept, 0)]
    return TrainResult(len(history), stopped, history, time.perf_counter() - start, step0)
