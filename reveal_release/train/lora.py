"""LoRA modules through PEFT: attach one, read its A matrices, save, read back, merge.

The only module that knows PEFT's names: live modules are reached through their objects
(`lora_A[adapter].weight`), saved ones through the file keys PEFT writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reveal_release.errors import RRError
from reveal_release.train.config import LoraSpec

ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER = "default"  # the name PEFT gives the one adapter rr attaches
PREFIX = "base_model.model."  # a PEFT-wrapped module's path, before the plain model's path
_A_SAVED = ".lora_A.weight"
_B_SAVED = ".lora_B.weight"


def module_name(key: str) -> str:
    """The plain model's module path of a PEFT module key."""
    return key.removeprefix(PREFIX)


def attach_lora(model: Any, spec: LoraSpec, seed: int) -> Any:
    """Wrap `model` with a fresh LoRA module (B = 0, A random); only it is trainable."""
    import torch
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in spec.target_modules if m not in present]
    if missing:
        linear = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"}
        )
        raise RRError(
            f"the model has no module named {', '.join(missing)}: choose --target-modules "
            f"from {', '.join(linear)}"
        )
    torch.manual_seed(seed)
    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        target_modules=list(spec.target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def trainable(peft_model: Any) -> dict[str, Any]:
    """The parameters that receive gradients (the module's A and B), by name."""
    return {n: p for n, p in peft_model.named_parameters() if p.requires_grad}


def lora_layers(peft_model: Any) -> dict[str, Any]:
    """The adapted layers (PEFT LoRA layers holding our adapter), keyed by module path."""
    return {
        name: mod
        for name, mod in peft_model.named_modules()
        if ADAPTER in getattr(mod, "lora_A", {})
    }


def a_matrices(peft_model: Any) -> dict[str, Any]:
    """The live A matrices (r x d_in) keyed by module path, gradients attached."""
    return {name: mod.lora_A[ADAPTER].weight for name, mod in lora_layers(peft_model).items()}


def merged_delta(layer: Any) -> Any:
    """The update s B A an adapted layer adds to its weight (as merging would add it)."""
    return layer.get_delta_weight(ADAPTER)


def set_factors(peft_model: Any, factors: Mapping[str, tuple[Any, Any]]) -> None:
    """Copy (A, B) pairs, keyed by plain module path, into the attached module."""
    import torch

    layers = {module_name(k): mod for k, mod in lora_layers(peft_model).items()}
    with torch.no_grad():
        for name, (a, b) in factors.items():
            layers[name].lora_A[ADAPTER].weight.copy_(a)
            layers[name].lora_B[ADAPTER].weight.copy_(b)


def adapter_file(adapter_dir: Path) -> Path:
    """A saved module's safetensors file; a one-line error when there is none (rr never reads
    PEFT's pickled adapter_model.bin)."""
    path = Path(adapter_dir) / ADAPTER_FILE
    if not path.is_file():
        raise RRError(
            f"{adapter_dir} holds no {ADAPTER_FILE} (rr reads adapters as safetensors only): "
            "delete that round folder and rerun to train it again"
        )
    return path


def read_adapter(adapter_dir: Path) -> dict[str, tuple[Any, Any]]:
    """A saved module's (A, B) per module path, from its PEFT safetensors file."""
    from safetensors.torch import load_file

    path = adapter_file(adapter_dir)
    try:
        tensors = load_file(path)
    except Exception as exc:  # noqa: BLE001
        raise RRError(
            f"cannot read adapter {path} ({type(exc).__name__}): the round's files are damaged; "
            "delete that round folder and rerun to train it again"
        ) from None
    out = {}
    for name, a in tensors.items():
        if name.endswith(_A_SAVED):
            key = name[: -len(_A_SAVED)]
            out[key] = (a, tensors[key + _B_SAVED])
    return out


def write_adapter_file(adapter_dir: Path, factors: Mapping[str, tuple[Any, Any]]) -> None:
    """Write (A, B) per module key as PEFT's adapter safetensors file (config written apart)."""
    from safetensors.torch import save_file

    tensors = {}
    for key, (a, b) in factors.items():
        tensors[key + _A_SAVED] = a.contiguous()
        tensors[key + _B_SAVED] = b.contiguous()
    save_file(tensors, str(Path(adapter_dir) / ADAPTER_FILE), metadata={"format": "pt"})


def load_a_matrices(adapter_dir: Path) -> dict[str, Any]:
    """A saved module's A matrices keyed by module path (for later rounds' O-LoRA term)."""
    return {k: a for k, (a, _) in read_adapter(adapter_dir).items()}


def save_adapter(peft_model: Any, folder: Path) -> None:
    """Save the attached module in PEFT format (adapter_config.json + safetensors)."""
    peft_model.save_pretrained(folder, safe_serialization=True)


def write_module(
    model: Any, spec: LoraSpec, factors: Mapping[str, tuple[Any, Any]], folder: Path
) -> None:
    """Save given (A, B) factors as a PEFT module of shape `spec`; `model` is left unchanged."""
    peft_model = attach_lora(model, spec, seed=0)
    try:
        set_factors(peft_model, factors)
        save_adapter(peft_model, folder)
    finally:
        peft_model.unload()


def merge(peft_model: Any) -> Any:
    """Fold the module into the weights (W <- W + s B A) and return the plain model."""
    model = peft_model.merge_and_unload()
    model.eval()
    return model


def add_update(model: Any, adapter_dir: Path, factor: float) -> None:
    """W <- W + factor * s B A in each layer a saved module adapts (in place, plain model)."""
    import torch

    layers = dict(model.named_modules())
    with torch.no_grad():
        for key, delta in delta_weights(adapter_dir).items():
            layer = layers.get(key.removeprefix("base_model.model."))
            if layer is None:
                raise RRError(f"{adapter_dir} adapts {key}, which this model does not have")
            w = layer.weight
            w += (factor * delta).to(w.device, w.dtype)


def apply_adapter(model: Any, adapter_dir: Path) -> Any:
    """Load a saved module onto `model` and merge it (rebuilding M_k after a resume)."""
    from peft import PeftModel

    adapter_file(adapter_dir)
    return merge(PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False))


def adapter_scaling(adapter_dir: Path) -> float:
    """A saved module's own s (lora_alpha / r, over sqrt(r) with rsLoRA): an R2F round's module
    is saved with alpha = r, whatever --alpha the release has."""
    path = Path(adapter_dir) / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        alpha, rank = float(config["lora_alpha"]), int(config["r"])
        if alpha <= 0 or rank <= 0 or config.get("alpha_pattern") or config.get("rank_pattern"):
            raise ValueError("not one positive alpha and rank")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RRError(
            f"cannot read the LoRA scaling from {path} ({type(exc).__name__}): the round's "
            "files are damaged; delete that round folder and rerun to train it again"
        ) from None
    return alpha / (rank**0.5 if config.get("use_rslora") else rank)


def delta_weights(adapter_dir: Path) -> dict[str, Any]:
    """Each module's update s B A of a saved module, s its own (adapter_scaling)."""
    s = adapter_scaling(adapter_dir)
    return {k: s * (b.float() @ a.float()) for k, (a, b) in read_adapter(adapter_dir).items()}
