"""The O-LoRA adapter stack: attach round k's module, read every round's A, save and merge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reveal_release.errors import RRError
from reveal_release.release.config import ReleaseConfig

ADAPTER_FILE = "adapter_model.safetensors"
_A_LIVE = ".lora_A.default.weight"
_B_LIVE = ".lora_B.default.weight"
_A_SAVED = ".lora_A.weight"
_B_SAVED = ".lora_B.weight"


def attach_lora(model: Any, cfg: ReleaseConfig, seed: int) -> Any:
    """Wrap `model` with a fresh LoRA module (B = 0, A random); only it is trainable."""
    import torch
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in cfg.target_modules if m not in present]
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
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        target_modules=list(cfg.target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def trainable(peft_model: Any) -> dict[str, Any]:
    """The parameters that receive gradients (round k's A and B), by name."""
    return {n: p for n, p in peft_model.named_parameters() if p.requires_grad}


def a_matrices(peft_model: Any) -> dict[str, Any]:
    """Round k's live A matrices (r x d_in) keyed by module path, gradients attached."""
    return {n[: -len(_A_LIVE)]: p for n, p in peft_model.named_parameters() if n.endswith(_A_LIVE)}


def read_adapter(adapter_dir: Path) -> dict[str, tuple[Any, Any]]:
    """A saved round's (A, B) per module path, from its PEFT safetensors file."""
    from safetensors.torch import load_file

    path = Path(adapter_dir) / ADAPTER_FILE
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


def load_a_matrices(adapter_dir: Path) -> dict[str, Any]:
    """A saved round's A matrices keyed by module path (for later rounds' O-LoRA term)."""
    return {k: a for k, (a, _) in read_adapter(adapter_dir).items()}


def save_adapter(peft_model: Any, folder: Path) -> None:
    """Save round k's module in PEFT format (adapter_config.json + safetensors)."""
    peft_model.save_pretrained(folder, safe_serialization=True)


def merge(peft_model: Any) -> Any:
    """Fold the module into the weights (W <- W + s B A) and return the plain model."""
    model = peft_model.merge_and_unload()
    model.eval()
    return model


def apply_adapter(model: Any, adapter_dir: Path) -> Any:
    """Load a saved round's module onto `model` and merge it (rebuilding M_k after a resume)."""
    from peft import PeftModel

    return merge(PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False))


def delta_weights(adapter_dir: Path, scaling: float) -> dict[str, Any]:
    """Each module's update s B A of a saved round (for cosines between rounds)."""
    return {k: scaling * (b.float() @ a.float()) for k, (a, b) in read_adapter(adapter_dir).items()}
