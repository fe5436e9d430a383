"""Round-to-nearest weight quantisers (the formats users deploy), on any device.

One implementation serves the quantisation attacks of `rr eval`, the per-round durability
check of `rr release` and quantisation-aware training, so all three see the same codes.

- int8:      symmetric, one scale per output row
- int4:      asymmetric, groups of 32 along the input (the grid of GGUF Q4_1)
- int4-g128: asymmetric, groups of 128
- int4-sym:  symmetric, groups of 32 (a grid like GGUF Q4_0's)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from reveal_release.errors import RRError


@dataclass(frozen=True)
class Scheme:
    """A round-to-nearest format: bits, group size along the input (0: per row), symmetry."""

    name: str
    bits: int
    group: int
    symmetric: bool
    description: str


SCHEMES = {
    s.name: s
    for s in (
        Scheme("int8", 8, 0, True, "int8, symmetric, one scale per output row"),
        Scheme("int4", 4, 32, False, "4-bit, asymmetric, groups of 32 (GGUF Q4_1's grid)"),
        Scheme("int4-g128", 4, 128, False, "4-bit, asymmetric, groups of 128 (a shorter last one)"),
        Scheme("int4-sym", 4, 32, True, "4-bit, symmetric, groups of 32 (like GGUF Q4_0)"),
    )
}


def scheme(name: str) -> Scheme:
    """The scheme called `name`, or a one-line error listing them."""
    if name not in SCHEMES:
        raise RRError(f"unknown quantisation scheme '{name}': choose {', '.join(SCHEMES)}")
    return SCHEMES[name]


def column_groups(w: Any, s: Scheme) -> list[Any]:
    """w's columns as groups: (rows, groups, size) blocks; a width the group size does not
    divide ends in one shorter group (as 576 = 4 x 128 + 64 does)."""
    x = w.float()
    rows, cols = x.shape
    size = s.group or cols
    whole = cols - cols % size
    blocks = [x[:, :whole].reshape(rows, whole // size, size)] if whole else []
    if whole < cols:
        blocks.append(x[:, whole:].reshape(rows, 1, cols - whole))
    return blocks


def group_codes(g: Any, s: Scheme) -> tuple[Any, Any, Any]:
    """Codes, scale and offset of (rows, groups, size) blocks (scale and offset per group)."""
    import torch

    if s.symmetric:
        qmax = 2 ** (s.bits - 1) - 1
        scale = g.abs().amax(-1, keepdim=True).clamp(min=1e-12) / qmax
        codes = torch.round(g / scale).clamp(-qmax - 1, qmax)
        return codes, scale, torch.zeros_like(scale)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    scale = ((hi - lo) / (2**s.bits - 1)).clamp(min=1e-12)
    codes = torch.round((g - lo) / scale).clamp(0, 2**s.bits - 1)
    return codes, scale, lo


def quantize_codes(w: Any, s: Scheme) -> Any:
    """The integer codes of w (same shape as w)."""
    import torch

    rows = w.shape[0]
    return torch.cat([group_codes(g, s)[0].reshape(rows, -1) for g in column_groups(w, s)], dim=1)


def quantize_tensor(w: Any, s: Scheme | str) -> Any:
    """w on the scheme's grid (dequantised back to w's dtype and shape)."""
    import torch

    s = scheme(s) if isinstance(s, str) else s
    rows = w.shape[0]
    parts = []
    for g in column_groups(w, s):
        codes, scale, offset = group_codes(g, s)
        parts.append((codes * scale + offset).reshape(rows, -1))
    return torch.cat(parts, dim=1).to(w.dtype)


def on_grid_share(w: Any, s: Scheme | str, rtol: float = 1e-3) -> float:
    """The share of weights the scheme maps to themselves (within rtol of a grid step)."""
    s = scheme(s) if isinstance(s, str) else s
    hits = total = 0
    for g in column_groups(w, s):
        codes, scale, offset = group_codes(g, s)
        err = (codes * scale + offset - g).abs() / scale
        hits += int((err <= rtol).sum())
        total += g.numel()
    return hits / total


def quantizable(model: Any, skip: tuple[str, ...] = ("lm_head",)) -> Iterator[tuple[str, Any]]:
    """(name, module) of every torch.nn.Linear but the output head."""
    import torch

    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and not any(x in name for x in skip):
            yield name, mod


def quantize_model(model: Any, s: Scheme | str, skip: tuple[str, ...] = ("lm_head",)) -> int:
    """Quantise every nn.Linear weight in place (the output head kept); returns layers done."""
    import torch

    s = scheme(s) if isinstance(s, str) else s
    done = 0
    with torch.no_grad():
        for _, mod in quantizable(model, skip):
            mod.weight.copy_(quantize_tensor(mod.weight, s))
            done += 1
    return done


def maps_onto_itself(model: Any, s: Scheme | str, skip: tuple[str, ...] = ("lm_head",)) -> bool:
    """Whether quantising the model leaves every weight exactly as it is (a model already on
    the scheme's grid): its quantised copy is then the model itself."""
    import torch

    s = scheme(s) if isinstance(s, str) else s
    with torch.no_grad():
        return all(
            torch.equal(quantize_tensor(mod.weight, s), mod.weight)
            for _, mod in quantizable(model, skip)
        )


def codes_of(model: Any, s: Scheme | str) -> dict[str, Any]:
    """Every quantisable layer's integer codes under the scheme (int8 tensors, for comparing)."""
    import torch

    s = scheme(s) if isinstance(s, str) else s
    with torch.no_grad():
        return {
            name: quantize_codes(mod.weight, s).to(torch.int16) for name, mod in quantizable(model)
        }


def changed_share(before: dict[str, Any], after: dict[str, Any]) -> float | None:
    """The share of codes that differ between two code sets of the same layers (None: the two
    models do not have the same layers, so no code corresponds to another)."""
    if before.keys() != after.keys() or any(before[k].shape != after[k].shape for k in before):
        return None
    changed = total = 0
    for name, a in before.items():
        b = after[name]
        changed += int((a != b).sum())
        total += a.numel()
    return changed / total if total else 0.0
