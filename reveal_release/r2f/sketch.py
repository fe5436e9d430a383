"""LoRA gradient sketches of each linear layer from one backward pass, without weight gradients.

For y = W x + s B A x, dL/dB = s G A^T with G = dL/dW = sum_t delta_t x_t^T. With B = 0 (the
model unchanged) the sketch S = G A^T = Delta^T (X A^T) is what a LoRA step would see; it is
computed here from the layer's inputs X and output gradients Delta, never forming G unless
the true gradient is asked for (on a proxy, to fit or check a decoder).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from reveal_release.errors import RRError
from reveal_release.train.logprobs import sequence_logps_from_logits

LAYER_RE = re.compile(r"\.layers\.(\d+)\.")


@dataclass(frozen=True)
class Layer:
    """One adapted linear layer: its module name, kind (e.g. q_proj) and relative depth."""

    name: str
    kind: str
    depth: float
    d_out: int
    d_in: int


def linear_layers(model: Any, kinds: Sequence[str]) -> list[Layer]:
    """The model's linear layers whose last name part is one of `kinds`, in order."""
    import torch

    found = []
    for name, mod in model.named_modules():
        kind = name.rsplit(".", 1)[-1]
        if kind in kinds and isinstance(mod, torch.nn.Linear):
            m = LAYER_RE.search(name)
            found.append((name, kind, int(m.group(1)) if m else 0, mod))
    if not found:
        raise RRError(f"the model has no linear layers named {', '.join(kinds)}")
    deepest = max(i for _, _, i, _ in found) or 1
    return [Layer(n, k, i / deepest, m.weight.shape[0], m.weight.shape[1]) for n, k, i, m in found]


@dataclass
class Capture:
    """Per layer: sketches S_v = G_v A_v^T, the input basis, and (optionally) the true G."""

    sketches: dict[str, list[Any]] = field(default_factory=dict)
    inputs: dict[str, list[Any]] = field(default_factory=dict)  # X rows (tokens x d_in)
    true: dict[str, Any] = field(default_factory=dict)


Forward = Callable[[Any, Any], Any]  # (input_ids, attention_mask) -> logits
LossFn = Callable[[Forward], Any]  # runs the model through `forward`, returns a scalar loss


def _layer_hook(
    layer: Layer, current: dict[str, Any], a_views: Sequence[Any], sums: list[Any], out: Capture,
    want_true: bool, keep_inputs: int,
) -> Callable:  # fmt: skip
    """A forward hook that adds the layer's sketch per view (and G, and its inputs) at backward
    time: rows of one view use that view's A, shared rows every view's (one stacked product)."""
    import torch

    rank = a_views[0].shape[0]
    stacked = torch.cat(list(a_views))  # every view's A, for rows shared by all views

    def add(v: int, part: Any) -> None:
        sums[v] = part if sums[v] is None else sums[v] + part

    def fwd(mod, args, output):
        mask, groups = current["mask"].bool(), current["groups"]
        x = args[0].detach()

        def rows(t: Any, sel: Any, width: int) -> Any:
            m = mask if sel is None else mask[sel]
            t = t if sel is None else t[sel]
            return t.reshape(-1, width)[m.reshape(-1)].float()

        def input_rows(v: int | None, sel: Any) -> Any:
            # layers that read one tensor (q, k and v; gate and up) share its rows: one copy
            key = (x.data_ptr(), tuple(x.shape), x.stride(), v)
            if key not in current["rows"]:
                current["rows"][key] = rows(x, sel, layer.d_in)
            return current["rows"][key]

        def bwd(grad):
            grad = grad.detach()
            for v, sel in groups:
                xf, d = input_rows(v, sel), rows(grad, sel, layer.d_out)
                if v is None:  # shared rows: every view's sketch in one product
                    for w, part in enumerate((d.T @ (xf @ stacked.T)).split(rank, dim=1)):
                        add(w, part)
                else:
                    add(v, d.T @ (xf @ a_views[v].T))
                if want_true:
                    out.true[layer.name] = out.true.get(layer.name, 0) + d.T @ xf
                if keep_inputs:
                    kept = out.inputs.setdefault(layer.name, [])
                    if sum(r.shape[0] for r in kept) < keep_inputs:
                        kept.append(xf)

        if output.requires_grad:
            output.register_hook(bwd)

    return fwd


def capture(
    model: Any,
    layers: Sequence[Layer],
    loss_fn: LossFn,
    a_mats: dict[str, Any],
    out: Capture,
    want_true: bool = False,
    keep_inputs: int = 0,
) -> float:
    """One view: one forward/backward of loss_fn; append each layer's sketch (and add G) to
    `out`; the loss."""
    one = Capture(inputs=out.inputs, true=out.true)
    loss = capture_views(model, layers, loss_fn, [a_mats], one, want_true, keep_inputs)
    for name, (sketch,) in one.sketches.items():
        out.sketches.setdefault(name, []).append(sketch)
    return loss


@contextmanager
def no_denormals() -> Iterator[None]:
    """Subnormal floats flushed to zero on the CPU within the block, and not afterwards (torch
    has no getter; rr sets the flag nowhere else). The batched views' pass makes them on the
    embedded model: one R2F update took 195 s with them and 21 s without; numbers under 1e-38
    change no sketch."""
    import torch

    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def capture_views(
    model: Any,
    layers: Sequence[Layer],
    loss_fn: LossFn,
    a_views: Sequence[dict[str, Any]],
    out: Capture,
    want_true: bool = False,
    keep_inputs: int = 0,
) -> float:
    """Several views in one forward/backward of loss_fn; add view v's sketch of each layer to
    out.sketches[layer][v] (passes over parts of the views add up).

    loss_fn calls forward(input_ids, attention_mask, views=None, logits_to_keep=0) as often as
    it needs; `views` names each row's view (None: rows shared by every view, e.g. retain rows).
    If view v's loss terms use only its own rows and the shared ones, its sketch is G_v A_v^T.
    """
    import torch

    modules = dict(model.named_modules())
    device = next(model.parameters()).device
    current: dict[str, Any] = {"mask": None, "groups": (), "rows": {}}
    sums = {ly.name: [None] * len(a_views) for ly in layers}

    def forward(
        input_ids: Any, attention_mask: Any, views: Sequence[int] | None = None,
        logits_to_keep: int = 0,
    ) -> Any:  # fmt: skip
        current["mask"] = attention_mask
        current["groups"] = view_groups(views, attention_mask.device)
        return embeddings_forward(model, input_ids, attention_mask, logits_to_keep)

    handles = [
        modules[ly.name].register_forward_hook(_layer_hook(
            ly, current, [a[ly.name].to(device) for a in a_views], sums[ly.name], out, want_true,
            keep_inputs,
        ))
        for ly in layers
    ]  # fmt: skip
    frozen = [p for p in model.parameters() if p.requires_grad]  # no weight gradients (R2F)
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.enable_grad(), no_denormals():
            loss = loss_fn(forward)
            loss.backward()
    finally:
        current["rows"].clear()
        for h in handles:
            h.remove()
        for p in frozen:
            p.requires_grad_(True)
    for name, parts in sums.items():
        _add_parts(out.sketches.setdefault(name, [None] * len(a_views)), parts)
    return float(loss.detach())


def _add_parts(have: list[Any], parts: list[Any]) -> None:
    """Add each view's part to what earlier passes gave it (None: nothing yet)."""
    for v, part in enumerate(parts):
        if part is not None:
            have[v] = part if have[v] is None else have[v] + part


def view_groups(views: Sequence[int] | None, device: Any) -> list[tuple[int | None, Any]]:
    """(view, row indices) for each view named in `views`; [(None, None)] for shared rows."""
    import torch

    if views is None:
        return [(None, None)]
    at: dict[int, list[int]] = {}
    for i, v in enumerate(views):
        at.setdefault(int(v), []).append(i)
    return [(v, torch.tensor(ix, device=device)) for v, ix in sorted(at.items())]


def embeddings_forward(
    model: Any, input_ids: Any, attention_mask: Any, logits_to_keep: int = 0
) -> Any:
    """Logits (of the last `logits_to_keep` positions; 0: all) with gradients flowing from the
    input embeddings (weights need none)."""
    from reveal_release.train.logprobs import keeps_logits

    emb = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
    extra = {"logits_to_keep": logits_to_keep} if logits_to_keep and keeps_logits(model) else {}
    return model(inputs_embeds=emb, attention_mask=attention_mask, **extra).logits


def nll_loss(batch: dict[str, Any]) -> LossFn:
    """The loss function: mean next-token NLL of the batch's answer tokens."""

    def loss_fn(forward: Forward) -> Any:
        logp, n = sequence_logps_from_logits(
            forward(batch["input_ids"], batch["attention_mask"]), batch["labels"]
        )
        return -logp.sum() / n.sum()

    return loss_fn


def random_a(layers: Sequence[Layer], rank: int, seed: int) -> dict[str, Any]:
    """A fresh A (rank x d_in, i.i.d. N(0, 1/d_in)) per layer: one view's projection."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return {ly.name: torch.randn(rank, ly.d_in, generator=gen) / ly.d_in**0.5 for ly in layers}
