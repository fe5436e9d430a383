"""Train round k's LoRA module: forget + retain + orthogonality (+ L2), with a safe stop."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reveal_release.atomic import atomic_write_bytes, atomic_write_json
from reveal_release.errors import RRError
from reveal_release.release.config import ReleaseConfig
from reveal_release.release.data import batch_indices, collate, encode_rows, refusal_rows
from reveal_release.release.lora import a_matrices, trainable
from reveal_release.release.losses import FORGET_LOSSES, RETAIN_LOSSES, sequence_logps
from reveal_release.release.orth import l2_penalty, orth_penalty

# A retain loss this many times its first value (and 2 nats above it) counts as exploding.
EXPLODE_FACTOR = 10.0


@dataclass
class TrainResult:
    """What one round's training did."""

    steps: int
    stopped: str | None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0

    def last(self, key: str) -> float | None:
        """The last logged value of a loss term."""
        return self.history[-1].get(key) if self.history else None


def reference_logps(model: Any, examples: Sequence, pad_id: int, batch_size: int) -> Any:
    """Per-sequence answer log-probs under the reference (adapters off), computed once."""
    import torch

    out = []
    with torch.no_grad(), model.disable_adapter():
        for lo in range(0, len(examples), batch_size):
            batch = collate(examples[lo : lo + batch_size], pad_id, model.device)
            out.append(sequence_logps(model, batch)[0])
    return torch.cat(out)


def _snapshot(params: Mapping[str, Any]) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in params.items()}


def _restore(params: Mapping[str, Any], snap: Mapping[str, Any]) -> None:
    import torch

    with torch.no_grad():
        for n, p in params.items():
            p.copy_(snap[n])


def _save_state(path: Path, step: int, params, optimizer, history: list[dict]) -> None:
    """Checkpoint inside a round: LoRA weights and AdamW moments as safetensors, plus JSON."""
    import torch
    from safetensors.torch import save

    names = list(params)
    tensors = {f"param/{n}": p.detach().contiguous() for n, p in params.items()}
    state = optimizer.state_dict()["state"]
    for i, n in enumerate(names):
        for k, v in state.get(i, {}).items():
            tensors[f"adam/{k}/{n}"] = torch.as_tensor(v).detach().reshape(-1).contiguous()
    atomic_write_bytes(path.with_suffix(".safetensors"), save(tensors))
    atomic_write_json(path.with_suffix(".json"), {"step": step, "history": history})


def _load_state(path: Path, params, optimizer) -> tuple[int, list[dict]]:
    """Restore a checkpoint written by _save_state; (0, []) when there is none."""
    import torch
    from safetensors.torch import load_file

    meta, weights = path.with_suffix(".json"), path.with_suffix(".safetensors")
    if not (meta.is_file() and weights.is_file()):
        return 0, []
    info = json.loads(meta.read_text())
    tensors = load_file(weights)
    names = list(params)
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[f"param/{n}"])
    sd = optimizer.state_dict()
    for i, n in enumerate(names):
        entry = {}
        for k in ("step", "exp_avg", "exp_avg_sq"):
            t = tensors.get(f"adam/{k}/{n}")
            if t is not None:
                entry[k] = t.reshape(()) if k == "step" else t.reshape(params[n].shape)
        if entry:
            sd["state"][i] = entry
    optimizer.load_state_dict(sd)
    return int(info["step"]), list(info["history"])


def _converged(history: Sequence[dict], cfg: ReleaseConfig) -> bool:
    """The forget loss stayed under cfg.converge x its first value for cfg.patience steps."""
    if cfg.converge <= 0 or len(history) < cfg.patience + 1:
        return False
    first = history[0]["forget"]
    return first > 0 and all(h["forget"] < cfg.converge * first for h in history[-cfg.patience :])


def train_round(
    peft_model: Any,
    tokenizer: Any,
    forget_rows: Sequence[dict],
    retain_rows: Sequence[dict],
    earlier_a: Sequence[Mapping[str, Any]],
    cfg: ReleaseConfig,
    *,
    round_: int,
    state_path: Path | None = None,
    on_step: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Run cfg.steps AdamW steps on round k's module; stop early, restored, on a bad loss."""
    import torch

    start = time.perf_counter()
    forget_loss = FORGET_LOSSES.get(cfg.loss)()
    retain_loss = RETAIN_LOSSES.get(cfg.retain_loss)()
    rows = refusal_rows(forget_rows) if forget_loss.refusal_data else forget_rows
    forget = encode_rows(tokenizer, rows, cfg.max_length)
    retain = encode_rows(tokenizer, retain_rows, cfg.max_length)
    if not forget:
        raise RRError("the forget set has no usable answers: nothing to train on")
    use_retain = cfg.retain_weight > 0 and bool(retain)
    pad = tokenizer.pad_token_id
    device = peft_model.device
    params = trainable(peft_model)
    optimizer = torch.optim.AdamW(params.values(), lr=cfg.lr, weight_decay=0.0)
    step0, history = _load_state(state_path, params, optimizer) if state_path else (0, [])
    ref = None
    if forget_loss.needs_reference:
        ref = reference_logps(peft_model, forget, pad, cfg.batch_size)
    peft_model.train()
    good = _snapshot(params)
    first_retain = next((h["retain"] for h in history if h.get("retain") is not None), None)
    stopped = None
    kept = step0
    for step in range(step0, cfg.steps):
        fi = batch_indices(len(forget), cfg.batch_size, cfg.seed * 131 + round_, step)
        fb = collate([forget[i] for i in fi], pad, device)
        logp, n = sequence_logps(peft_model, fb)
        lf = forget_loss(logp, n, ref[fi] if ref is not None else None, cfg)
        terms = {"forget": lf}
        if use_retain:
            ri = batch_indices(len(retain), cfg.batch_size, cfg.seed * 131 + round_ + 7, step)
            terms["retain"] = retain_loss(
                peft_model, collate([retain[i] for i in ri], pad, device), cfg
            )
        if cfg.orth_weight > 0 and earlier_a:
            terms["orth"] = orth_penalty(a_matrices(peft_model), earlier_a)
        if cfg.l2_weight > 0:
            terms["l2"] = l2_penalty(params)
        weights = {"forget": 1.0, "retain": cfg.retain_weight, "orth": cfg.orth_weight}
        weights["l2"] = cfg.l2_weight
        loss = sum(weights[k] * v for k, v in terms.items())
        values = {k: float(v.detach()) for k, v in terms.items()}
        if not math.isfinite(float(loss.detach())):
            stopped = f"non-finite loss at step {step + 1}"
            kept = max(step - 1, step0)  # theta_step is broken: back to the weights before
            break
        if "retain" in values:
            first_retain = values["retain"] if first_retain is None else first_retain
            limit = max(EXPLODE_FACTOR * first_retain, first_retain + 2.0)
            if values["retain"] > limit:
                stopped = (
                    f"retain loss exploded at step {step + 1} "
                    f"({values['retain']:.2f}, first {first_retain:.2f})"
                )
                kept = max(step - 1, step0)
                break
        good = _snapshot(params)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.max_grad_norm))
        if not math.isfinite(norm):
            stopped = f"non-finite gradient at step {step + 1}"
            kept = step
            break
        optimizer.step()
        if not all(torch.isfinite(p).all() for p in params.values()):
            stopped = f"non-finite weights after step {step + 1}"
            kept = step
            break
        entry = {"step": step + 1, "loss": float(loss.detach()), **values, "grad_norm": norm}
        history.append(entry)
        if on_step:
            on_step(step + 1, entry)
        if forget_loss.bounded and _converged(history, cfg):
            break
        if state_path and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            _save_state(state_path, step + 1, params, optimizer, history)
    if stopped:
        # Back to the last weights whose loss was finite and in bounds (the first weights of
        # this attempt when a resumed run fails at once).
        _restore(params, good)
        history = history[: max(kept, 0)]
    peft_model.eval()
    return TrainResult(
        steps=len(history),
        stopped=stopped,
        history=history,
        seconds=time.perf_counter() - start,
        resumed_from=step0,
    )
