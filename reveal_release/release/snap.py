"""Keep a released model on the quantisation grid its base model sits on.

A model dequantised from a GGUF file (SmolLM2's Q4_1) has every weight on an int4 grid; a user
who quantises the released model back to that format rounds each weight to its nearest grid
point, and a release whose update is smaller than half a step (every LoRA update measured here)
comes back as the base model: the target with it. So the model a release hands out is its
full-precision model rounded onto the base's own grid here, where we can choose the rounding:
error-compensated, as GPTQ (Frantar et al. 2023) does, so that the rounded layer reproduces the
full-precision layer's outputs on the forget sets (the inputs where the release differs from
the base). Each group keeps its grid: the elements that set it (the group's min and max, or its
largest magnitude) keep their values, so quantising the released model to that format again
changes nothing. Training goes on from the full-precision model: rounding is not compounded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reveal_release.quantizers import (
    SCHEMES,
    Scheme,
    column_groups,
    group_codes,
    on_grid_share,
    quantizable,
)

GRID_SHARE = 0.99  # a base this much on a scheme's grid counts as sitting on it
PREFERRED = ("int4", "int4-sym", "int4-g128", "int8")  # finest grids first
FLAT = 1e-10  # a group this narrow (all its weights equal) has no grid to keep


@dataclass
class LayerGrid:
    """One layer's grid: each group's scale and offset, and the elements that set the grid
    (their columns and their exact values, kept as they are)."""

    col_group: Any  # (cols,) the group of each column
    scale: Any  # (rows, groups)
    offset: Any  # (rows, groups)
    anchor_cols: Any  # (rows, anchors) columns of the grid-setting elements
    anchor_vals: Any  # (rows, anchors) their values
    lowest: int
    highest: int


def base_scheme(model: Any, threshold: float = GRID_SHARE) -> str | None:
    """The scheme whose grid the model's linear weights already sit on (None: none does)."""
    import torch

    with torch.no_grad():
        weights = [mod.weight for _, mod in quantizable(model)]
        total = sum(w.numel() for w in weights)
        for name in PREFERRED:
            try:
                share = sum(on_grid_share(w, name) * w.numel() for w in weights) / total
            except Exception:  # noqa: BLE001 - a width this scheme cannot group
                continue
            if share >= threshold:
                return name
    return None


def layer_grid(w: Any, s: Scheme) -> LayerGrid:
    """The grid of a weight on its scheme, and which elements define it."""
    import torch

    scales, offsets, groups, cols_, vals = [], [], [], [], []
    start = n_groups = 0
    for g in column_groups(w, s):
        _, scale, offset = group_codes(g, s)
        count, size = g.shape[1], g.shape[2]
        scales.append(scale[..., 0])
        offsets.append(offset[..., 0])
        ids = torch.arange(n_groups, n_groups + count, device=w.device)
        groups.append(ids.repeat_interleave(size))
        ends = [g.abs().argmax(-1)] if s.symmetric else [g.argmin(-1), g.argmax(-1)]
        base = start + torch.arange(count, device=w.device) * size  # first column of each group
        for idx in ends:
            cols_.append(base + idx)
            vals.append(g.gather(-1, idx.unsqueeze(-1))[..., 0])
        start += count * size
        n_groups += count
    qmax = 2 ** (s.bits - 1) - 1
    low, high = (-qmax, qmax) if s.symmetric else (0, 2**s.bits - 1)
    cat = torch.cat
    return LayerGrid(cat(groups), cat(scales, 1), cat(offsets, 1), cat(cols_, 1), cat(vals, 1),
                     low, high)  # fmt: skip


def grids_of(model: Any, scheme: str) -> dict[str, LayerGrid]:
    """Every quantisable layer's grid (taken before a merge: the grid the release keeps)."""
    import torch

    s = SCHEMES[scheme]
    with torch.no_grad():
        return {name: layer_grid(mod.weight, s) for name, mod in quantizable(model)}


def input_hessians(model: Any, tokenizer: Any, rows: Sequence[dict], max_length: int = 128):
    """Per layer, X^T X of its inputs over the rows (answer and prompt tokens alike)."""
    import torch

    from reveal_release.train.data import collate, encode_rows

    layers = dict(quantizable(model))
    hess: dict[str, Any] = {}
    mask: list[Any] = [None]

    def hook(name: str):
        def add(mod: Any, args: Any, out: Any) -> None:
            x = args[0].reshape(-1, args[0].shape[-1])[mask[0]].float()
            hess[name] = hess.get(name, 0) + x.T @ x

        return add

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    examples = encode_rows(tokenizer, rows, max_length)
    try:
        with torch.no_grad():
            for lo in range(0, len(examples), 8):
                batch = collate(examples[lo : lo + 8], tokenizer.pad_token_id, model.device)
                mask[0] = batch["attention_mask"].reshape(-1).bool()
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for h in handles:
            h.remove()
    return hess


def round_layer(w: Any, grid: LayerGrid, hess: Any, damp: float, block: int = 128) -> Any:
    """w rounded onto the grid column by column, each column's rounding error carried to the
    columns not yet rounded through the inverse of the inputs' second moment (GPTQ).

    It works on w transposed, so that each column is one contiguous vector."""
    import torch

    wt = w.float().t().contiguous()  # (cols, rows)
    cols, rows = wt.shape
    h = hess.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h += damp * torch.diag(h).mean() * torch.eye(cols, device=h.device)
    upper = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    scale = grid.scale[:, grid.col_group].t().contiguous()
    offset = grid.offset[:, grid.col_group].t().contiguous()
    on = {"device": w.device}
    frozen = torch.zeros(rows, cols, dtype=torch.bool, **on).scatter_(1, grid.anchor_cols, True)
    keep = torch.zeros(rows, cols, **on).scatter_(1, grid.anchor_cols, grid.anchor_vals.float())
    frozen, keep = frozen.t().contiguous(), keep.t().contiguous()
    flat = scale <= FLAT
    out = torch.empty_like(wt)
    for b0 in range(0, cols, block):
        b1 = min(b0 + block, cols)
        part, err, u = wt[b0:b1].clone(), torch.zeros(b1 - b0, rows, **on), upper[b0:b1, b0:b1]
        for j in range(b1 - b0):
            c = b0 + j
            code = torch.round((part[j] - offset[c]) / scale[c])
            q = code.clamp(grid.lowest, grid.highest) * scale[c] + offset[c]
            q = torch.where(frozen[c], keep[c], q)
            q = torch.where(flat[c], part[j], q)  # a group with no grid: left as it is
            out[c] = q
            e = (part[j] - q) / u[j, j]
            part[j:] -= u[j, j:].unsqueeze(1) * e.unsqueeze(0)
            err[j] = e
        wt[b1:] -= upper[b0:b1, b1:].t() @ err
    return out.t()


def scale_update(model: Any, base_weights: dict[str, Any], gain: float) -> None:
    """W <- W0 + gain (W - W0) on the quantisable layers whose W0 is given (none: no-op)."""
    import torch

    if not base_weights or gain == 1:
        return
    with torch.no_grad():
        for name, mod in quantizable(model):
            w0 = base_weights[name].to(mod.weight.device, mod.weight.dtype)
            mod.weight.copy_(w0 + gain * (mod.weight - w0))


def snap(
    model: Any,
    tokenizer: Any,
    grids: dict[str, LayerGrid],
    rows: Sequence[dict],
    damp: float = 0.01,
) -> dict[str, Any]:
    """Round the model's quantisable layers onto their grids, error-compensated on `rows`."""
    import torch

    start = time.perf_counter()
    hess = input_hessians(model, tokenizer, rows)
    with torch.no_grad():
        for name, mod in quantizable(model):
            rounded = round_layer(mod.weight, grids[name], hess[name], damp)
            mod.weight.copy_(rounded.to(mod.weight.dtype))
    return {"snap_rows": len(rows), "snap_seconds": time.perf_counter() - start}
