"""R2F's retain null space: keep each step out of the input directions the retain answers use.

A layer's change dW moves its outputs on an input x by dW x. If every row of dW is orthogonal to
the inputs the retain answers feed the layer, their outputs do not move, at that layer and so
(every adapted layer alike) through the whole model. AlphaEdit (Fang et al., ICLR 2025, arXiv
2410.02355) projects a knowledge edit onto the null space of the preserved knowledge's keys in
the same way. Here the retain answers' inputs per layer give the uncentred covariance
C = X^T X; its top eigenvectors, as many as carry `share` of its trace, are the directions a
step leaves alone (1.0: every direction the retain inputs reach).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from reveal_release.r2f.sketch import Layer

# Eigenvalues under this share of the trace are rounding noise, not directions the inputs use.
NOISE = 1e-6


def retain_bases(
    model: Any, layers: Sequence[Layer], batches: Iterable[dict], share: float
) -> dict[str, Any]:
    """Per layer, an orthonormal basis (d_in x m) of the top input directions of `batches`
    (the retain answers, prompt and answer tokens, padding left out) that carry `share` of
    the inputs' energy."""
    import torch

    from reveal_release.train.logprobs import keeps_logits

    extra = {"logits_to_keep": 1} if keeps_logits(model) else {}  # the head is not needed
    mods = dict(model.named_modules())
    cov: dict[str, Any] = {}
    mask: dict[str, Any] = {}

    def hook(name: str) -> Any:
        def add(module: Any, args: tuple, output: Any) -> None:
            x = args[0].detach()
            x = x.reshape(-1, x.shape[-1])[mask["now"].reshape(-1)].double()
            cov[name] = cov.get(name, 0) + x.T @ x

        return add

    handles = [mods[ly.name].register_forward_hook(hook(ly.name)) for ly in layers]
    try:
        with torch.no_grad():
            for b in batches:
                mask["now"] = b["attention_mask"].bool()
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], **extra)
    finally:
        for h in handles:
            h.remove()
    return {name: top_directions(c, share).float() for name, c in cov.items()}


def top_directions(cov: Any, share: float) -> Any:
    """The fewest top eigenvectors of a covariance that carry `share` of its trace."""
    import torch

    vals, vecs = torch.linalg.eigh(cov)
    vals, vecs = vals.flip(0).clamp(min=0), vecs.flip(1)
    cum = torch.cumsum(vals, 0) / vals.sum().clamp(min=1e-300)
    m = int(torch.searchsorted(cum, torch.tensor(share - NOISE, dtype=cum.dtype))) + 1
    return vecs[:, : min(m, vecs.shape[1])].contiguous()


def joined(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """Per layer, an orthonormal basis of the span of both bases (either may lack the layer)."""
    import torch

    out = dict(first)
    for name, q2 in second.items():
        q1 = out.get(name)
        if q1 is None:
            out[name] = q2
            continue
        q1 = q1.to(q2.device, q2.dtype)
        rest = q2 - q1 @ (q1.T @ q2)  # what the second adds to the first
        u, s, _ = torch.linalg.svd(rest, full_matrices=False)
        out[name] = torch.cat([q1, u[:, s > 1e-4]], dim=1)
    return out
