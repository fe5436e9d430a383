"""Round-to-nearest weight quantisation of a model's linear layers (int8, 4-bit), on any device."""

from __future__ import annotations

from typing import Any

from reveal_release.errors import RRError

SCHEMES = {
    # name: (bits, group size along the input dimension; 0 = one scale per output row)
    "int8": (8, 0),
    "int4": (4, 32),
}


def quantize_tensor(w: Any, bits: int, group: int) -> Any:
    """w rounded to a `bits`-bit grid: symmetric per row, or asymmetric per group of columns."""
    import torch

    if group == 0:
        x = w.float()
        qmax = 2 ** (bits - 1) - 1
        scale = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / qmax
        return (torch.round(x / scale).clamp(-qmax - 1, qmax) * scale).to(w.dtype)
    rows, cols = w.shape
    if cols % group:
        raise RRError(f"int{bits} quantisation needs widths divisible by {group}, got {cols}")
    g = w.reshape(rows, cols // group, group).float()
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    levels = 2**bits - 1
    scale = ((hi - lo) / levels).clamp(min=1e-12)
    q = torch.round((g - lo) / scale).clamp(0, levels)
    return (q * scale + lo).reshape(rows, cols).to(w.dtype)


def quantize_model(model: Any, scheme: str, skip: tuple[str, ...] = ("lm_head",)) -> int:
    """Quantise every nn.Linear weight in place (the output head kept); returns layers done."""
    import torch

    if scheme not in SCHEMES:
        raise RRError(f"unknown quantisation scheme '{scheme}': choose {', '.join(SCHEMES)}")
    bits, group = SCHEMES[scheme]
    done = 0
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and not any(s in name for s in skip):
                mod.weight.copy_(quantize_tensor(mod.weight, bits, group))
                done += 1
    return done
