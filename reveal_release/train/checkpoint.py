"""Training state inside a round: the module's weights and AdamW moments, saved for resume."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reveal_release.atomic import atomic_write_bytes, atomic_write_json
from reveal_release.errors import RRError
from reveal_release.run_files import TRAIN_STATE
from reveal_release.schema import read_json


def save_state(
    path: Path,
    step: int,
    params: Mapping[str, Any],
    optimizer: Any,
    history: list[dict],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write PATH.safetensors (weights, Adam moments, `extra` tensors such as a gradient
    rule's state) and PATH.json (step, loss history)."""
    import torch
    from safetensors.torch import save

    tensors = {f"param/{n}": p.detach().contiguous() for n, p in params.items()}
    state = optimizer.state_dict()["state"]
    for i, n in enumerate(params):
        for k, v in state.get(i, {}).items():
            tensors[f"adam/{k}/{n}"] = torch.as_tensor(v).detach().reshape(-1).contiguous()
    for k, t in (extra or {}).items():
        tensors[k] = t.detach().contiguous()
    atomic_write_bytes(path.with_suffix(".safetensors"), save(tensors))
    atomic_write_json(path.with_suffix(".json"), {"step": step, "history": history})


def load_state(
    path: Path, params: Mapping[str, Any], optimizer: Any, extra: Any = None
) -> tuple[int, list[dict]]:
    """Restore what save_state wrote (`extra.load(tensors)` gets the tensors, for a gradient
    rule's state); (0, []) when there is nothing to restore."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta, weights = path.with_suffix(".json"), path.with_suffix(".safetensors")
    if not (meta.is_file() and weights.is_file()):
        return 0, []
    fix = f"delete {meta} and {weights.name} beside it to train this round from its first step"
    info = read_json(meta, TRAIN_STATE, fix)
    try:
        tensors = load_file(weights)
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(tensors[f"param/{n}"])
    except (SafetensorError, KeyError, RuntimeError, OSError) as exc:
        raise RRError(f"{weights} is damaged ({type(exc).__name__}: {exc}): {fix}") from None
    sd = optimizer.state_dict()
    for i, n in enumerate(params):
        entry = {}
        for k in ("step", "exp_avg", "exp_avg_sq"):
            t = tensors.get(f"adam/{k}/{n}")
            if t is not None:
                entry[k] = t.reshape(()) if k == "step" else t.reshape(params[n].shape)
        if entry:
            sd["state"][i] = entry
    optimizer.load_state_dict(sd)
    if extra is not None:
        extra.load(tensors)
    return int(info["step"]), list(info["history"])


def remove_state(path: Path) -> None:
    """Delete a finished round's training state."""
    for suffix in (".json", ".safetensors"):
        path.with_suffix(suffix).unlink(missing_ok=True)
