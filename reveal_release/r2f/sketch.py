"""LoRA gradient sketches of each linear layer from one backward pass, without weight gradients.

For y = W x + s B A x, dL/dB = s G A^T with G = dL/dW = sum_t delta_t x_t^T. With B = 0 (the
model unchanged) the sketch S = G A^T = Delta^T (X A^T) is what a LoRA step would see; it is
computed here from the layer's inputs X and output gradients Delta, never forming G unless
the true gradient is asked for (on a proxy, to fit or check a decoder).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
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
    layer: Layer, current: dict[str, Any], a: Any, sums: dict[str, Any], out: Capture,
    want_true: bool, keep_inputs: int,
) -> Callable:  # fmt: skip
    """A forward hook that adds the layer's sketch (and G, and its inputs) at backward time."""

    def fwd(mod, args, output):
        mask = current["mask"].reshape(-1).bool()
        x = args[0].detach().reshape(-1, layer.d_in)[mask]

        def bwd(grad):
            d = grad.detach().reshape(-1, layer.d_out)[mask].float()
            xf = x.float()
            part = d.T @ (xf @ a.T)
            sums[layer.name] = sums[layer.name] + part if layer.name in sums else part
            if want_true:
                out.true[layer.name] = out.true.get(layer.name, 0) + d.T @ xf
            if keep_inputs:
                rows = out.inputs.setdefault(layer.name, [])
                if sum(r.shape[0] for r in rows) < keep_inputs:
                    rows.append(xf)

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
    """One forward/backward of loss_fn; add each layer's sketch (and G) to `out`; the loss.

    loss_fn runs the model through the `forward` it is given (as often as it needs), so each
    layer's hook knows the attention mask of the pass it is in.
    """
    import torch

    modules = dict(model.named_modules())
    device = next(model.parameters()).device
    current: dict[str, Any] = {"mask": None}  # the attention mask of the pass being run
    sums: dict[str, Any] = {}  # a loss may run the model more than once: add the parts

    def forward(input_ids: Any, attention_mask: Any) -> Any:
        current["mask"] = attention_mask
        return embeddings_forward(model, input_ids, attention_mask)

    handles = [
        modules[ly.name].register_forward_hook(
            _layer_hook(ly, current, a_mats[ly.name].to(device), sums, out, want_true, keep_inputs)
        )
        for ly in layers
    ]
    # No weight gradients: backprop only carries activations' gradients (the point of R2F).
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            loss = loss_fn(forward)
            loss.backward()
    finally:
        for h in handles:
            h.remove()
        for p in frozen:
            p.requires_grad_(True)
    for name, s in sums.items():
        out.sketches.setdefault(name, []).append(s)
    return float(loss.detach())


def embeddings_forward(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """Logits with gradients flowing from the input embeddings (weights need none)."""
    emb = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
    return model(inputs_embeds=emb, attention_mask=attention_mask).logits


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
