"""One R2F step: decode each layer's gradient from its sketches, keep it out of earlier rounds'
subspaces, step the weights along it; and the round's change as a rank-r module."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reveal_release.r2f.decoder import SubspaceDecoder, input_basis
from reveal_release.r2f.sketch import Capture, Layer


def earlier_bases(earlier_a: Sequence[Mapping[str, Any]], name_of: Any = str) -> dict[str, Any]:
    """Per layer, an orthonormal basis (d_in x m) of every earlier round's A rows.

    `name_of` maps an A matrix's key to the layer's module path.
    """
    import torch

    stacked: dict[str, list[Any]] = {}
    for round_a in earlier_a:
        for key, a in round_a.items():
            stacked.setdefault(name_of(key), []).append(a.float())
    return {k: torch.linalg.qr(torch.cat(v).T).Q for k, v in stacked.items()}


def low_rank(delta: Any, rank: int) -> tuple[Any, Any]:
    """(A, B) with B A the best rank-r approximation of delta (A: r x d_in, B: d_out x r)."""
    import torch

    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    r = min(rank, s.numel())
    return vh[:r].contiguous(), (u[:, :r] * s[:r]).contiguous()


class Momentum:
    """Each layer's running direction: an exponential average of its unit decoded gradients.
    A step's decoded gradient is its true one plus an error that a fresh sketch draws anew
    (held-out cosine about 0.5 on the embedded model); the average keeps the part the steps
    share. beta 0 steps along each step's own direction."""

    def __init__(self, beta: float = 0.0):
        self.beta = beta
        self.avg: dict[str, Any] = {}

    def __call__(self, name: str, unit: Any) -> Any:
        """The unit direction to step along, given this step's unit decoded gradient."""
        if not self.beta:
            return unit
        prev = self.avg.get(name)
        avg = unit if prev is None else self.beta * prev + (1 - self.beta) * unit
        self.avg[name] = avg
        return avg / avg.norm()


def decoded_step(
    dec: SubspaceDecoder,
    layers: Sequence[Layer],
    mods: Mapping[str, Any],
    cap: Capture,
    a_views: Sequence[Mapping[str, Any]],
    step_size: Mapping[str, float],
    protect: Mapping[str, Any] | None = None,
    applied: dict[str, Any] | None = None,
    gradient: Callable[[Layer], Any] | None = None,
    heading: Momentum | None = None,
) -> list[float]:
    """Step each layer's weights by step_size[name] along its decoded gradient (earlier
    rounds' subspaces removed); returns the decoded gradients' norms (and, in `applied`, each
    layer's change, so a caller can take part of it back). `gradient` replaces the decoding
    (benchmarks/r2f_oracle.py steps along the true gradient to tell the decoder's part);
    `heading` turns each unit gradient into the direction stepped along (--r2f-momentum)."""
    import torch

    def decoded(ly: Layer) -> Any:
        sketches, a = cap.sketches[ly.name], [a[ly.name] for a in a_views]
        return dec.decode(ly.kind, ly.depth, sketches, a, input_basis(cap.inputs[ly.name]))

    gradient, heading = gradient or decoded, heading or Momentum()
    norms = []
    with torch.no_grad():
        for ly in layers:
            g = gradient(ly)
            q = (protect or {}).get(ly.name)
            if q is not None:  # no component in earlier rounds' subspaces
                g = g - (g @ q.to(g.device)) @ q.T.to(g.device)
            w, gn = mods[ly.name].weight, float(g.norm())
            if gn > 0:
                unit = heading(ly.name, g / gn)
                change = -step_size[ly.name] * unit.to(w.dtype)
                w += change
                if applied is not None:
                    applied[ly.name] = change
            norms.append(gn)
    return norms
