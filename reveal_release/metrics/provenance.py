"""Where a model's weights come from, and how close they sit to each quantisation grid.

A model dequantised from a GGUF file keeps the grid of its format: SmolLM2's Q4_1 weights sit
exactly on the asymmetric 4-bit grid of groups of 32, so quantising there again maps the base
onto itself and any update smaller than half a step back onto the base. The report shows it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from reveal_release.models import LoadedModel
from reveal_release.quantizers import SCHEMES, on_grid_share, quantizable


def gguf_formats(path: Path) -> dict[str, int]:
    """Tensor count per storage type of a GGUF file (Q4_1, Q6_K, F32...)."""
    from gguf import GGUFReader

    return dict(Counter(t.tensor_type.name for t in GGUFReader(str(path)).tensors))


def grid_shares(loaded: LoadedModel, schemes: tuple[str, ...] = tuple(SCHEMES)) -> dict:
    """Per scheme, the share of linear weights (head excluded) the scheme maps to themselves."""
    import torch

    out = {}
    with torch.no_grad():
        layers = [mod.weight for _, mod in quantizable(loaded.model)]
        total = sum(w.numel() for w in layers)
        for name in schemes:
            hits = 0.0
            for w in layers:
                try:
                    hits += on_grid_share(w, name) * w.numel()
                except Exception:  # noqa: BLE001 - a width the scheme cannot group
                    hits = float("nan")
                    break
            out[name] = hits / total if total else None
    return out


def provenance(loaded: LoadedModel) -> dict[str, Any]:
    """The model's source (a dequantised GGUF and its formats, or a folder) and grid shares."""
    src = loaded.source
    out: dict[str, Any] = {"source": src.kind, "spec": src.spec}
    if src.gguf is not None:
        out["gguf"] = Path(src.gguf).name
        out["gguf_formats"] = gguf_formats(src.gguf)
    out["on_grid"] = grid_shares(loaded)
    return out
