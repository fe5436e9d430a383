"""Quantisation-aware forward passes: the model as its quantised copy would compute, with
straight-through gradients to the LoRA module.

Inside `fake_quantized(peft_model, scheme)` every adapted layer computes
    y = x Q(W0 + s B A)^T          (the value the quantised merged model gives)
with the gradient of a plain LoRA layer for A and B (straight-through: dQ/dW taken as 1) and
the quantised weight for the gradient to x. It does so by giving the base layer the frozen
weight Q(W0 + s B A) - s B A for the pass, so PEFT's own forward (base + s B A x) adds up to
the quantised value. The weights are computed once on entry: leave the context before an
optimiser step. Gradients may be taken after leaving it (the pass keeps its own tensors).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from reveal_release.quantizers import Scheme, quantize_tensor
from reveal_release.train.lora import lora_layers, merged_delta


@contextmanager
def fake_quantized(peft_model: Any, scheme: Scheme | str) -> Iterator[None]:
    """Run the adapted layers as their round-to-nearest quantised merged weights."""
    import torch
    import torch.nn.functional as F

    patched = []
    with torch.no_grad():
        for mod in lora_layers(peft_model).values():
            base = mod.base_layer
            delta = merged_delta(mod)
            frozen = (quantize_tensor(base.weight + delta, scheme) - delta).detach()

            def forward(x: Any, *args: Any, _w: Any = frozen, _b: Any = base.bias, **kw: Any):
                return F.linear(x, _w, _b)

            base.forward = forward
            patched.append(base)
    try:
        yield
    finally:
        for base in patched:
            del base.forward  # back to the class's forward
