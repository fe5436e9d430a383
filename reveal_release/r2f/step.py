"""One R2F step: decode each layer's gradient from its sketches, keep it out of earlier rounds'
subspaces, step the weights along it; and the round's change as a rank-r module."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reveal_release.r2f.decoder import SubspaceDecoder, shared_bases
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


class Factored:
    """Adafactor's factored second moment (Shazeer & Stern, arXiv 1804.04235) as R2F's
    preconditioner: each layer keeps running means of its squared gradient's rows and columns,
    V = r c^T / mean(r), and a step divides the gradient by sqrt(V) elementwise, as Adam does,
    at d_out + d_in numbers per layer instead of two moments per weight. Because V has rank
    one the division is a scaling of rows and of columns, so the gradient keeps its rank.
    beta2 is the running means' decay (the first step's own means start them)."""

    def __init__(self, beta2: float = 0.9, eps: float = 1e-30):
        self.beta2, self.eps = beta2, eps
        self.state: dict[str, tuple[Any, Any]] = {}

    def __call__(self, name: str, g: Any, inputs: Any = None) -> Any:
        """The preconditioned gradient of layer `name` (the running means updated)."""
        g2 = g.float() ** 2 + self.eps
        rows, cols = g2.mean(dim=1), g2.mean(dim=0)
        prev = self.state.get(name)
        if prev is not None:
            b = self.beta2
            rows, cols = b * prev[0] + (1 - b) * rows, b * prev[1] + (1 - b) * cols
        self.state[name] = (rows, cols)
        scaled = g.float() * rows.mean().sqrt() / rows.sqrt()[:, None] / cols.sqrt()[None, :]
        return scaled.to(g.dtype)


class Whiten:
    """K-FAC's input factor as R2F's preconditioner: each gradient times the inverse of the
    layer's input covariance (damped by `damping` x its mean eigenvalue), from the inputs the
    step's sketches kept, so that the step moves the outputs along the input directions the
    layer sees least as much as along those it sees most."""

    def __init__(self, damping: float = 0.1):
        self.damping = damping

    def __call__(self, name: str, g: Any, inputs: Any = None) -> Any:
        """g (X^T X / n + damping I)^-1 for the layer's kept inputs X (g itself without any)."""
        import torch

        if not inputs:
            return g
        x = torch.cat(list(inputs)).to(g.device, torch.float32)
        cov = x.T @ x / x.shape[0]
        damp = self.damping * float(cov.diagonal().mean()) or 1.0
        eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        return torch.linalg.solve(cov + damp * eye, g.float().T).T.to(g.dtype)


class Projected:
    """GaLore (Zhao et al., arXiv 2403.03507) as R2F's preconditioner: each layer's decoded
    gradient projected onto a rank-r basis, Adam's two moments kept on the projection, and
    Adam's step mapped back. basis "gradient": the top-r left singular vectors of the round's
    first gradient (GaLore's projection, renewed every `refresh` steps, 0: never); "random": a
    fixed random orthonormal basis of the inputs, drawn from the layer's name (LoRA with its A
    frozen, LoRA-FA, arXiv 2308.03303). With a fixed basis every step, and the round's change,
    has rank r. `scaled`: the step keeps Adam's magnitude, its first step of norm 1 (so
    --r2f-step sets the first step, and later ones shrink as Adam's do); else unit steps."""

    def __init__(self, rank: int = 8, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 basis: str = "gradient", refresh: int = 0, scaled: bool = True):  # fmt: skip
        self.rank, self.beta1, self.beta2, self.eps = rank, beta1, beta2, eps
        self.basis, self.refresh, self.scaled = basis, refresh, scaled
        self.state: dict[str, dict[str, Any]] = {}

    def _basis(self, name: str, g: Any) -> Any:
        """The layer's basis: d_out x r (gradient) or d_in x r (random)."""
        import zlib

        import torch

        if self.basis == "random":
            gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            rand = torch.randn(g.shape[1], self.rank, generator=gen)
            return torch.linalg.qr(rand).Q.to(g.device)
        return torch.linalg.svd(g, full_matrices=False).U[:, : self.rank]

    def __call__(self, name: str, g: Any, inputs: Any = None) -> Any:
        """Adam's bias-corrected step on the projected gradient, mapped back (state updated)."""
        g32 = g.float()
        st = self.state.get(name)
        if st is None:
            st = self.state[name] = {"basis": self._basis(name, g32), "m": 0.0, "v": 0.0, "t": 0}
        elif self.refresh and self.basis == "gradient" and st["t"] % self.refresh == 0:
            st["basis"] = self._basis(name, g32)
        out_side = self.basis == "gradient"
        low = st["basis"].T @ g32 if out_side else g32 @ st["basis"]
        b1, b2 = self.beta1, self.beta2
        st["t"] += 1
        st["m"] = b1 * st["m"] + (1 - b1) * low
        st["v"] = b2 * st["v"] + (1 - b2) * low**2
        m_hat, v_hat = st["m"] / (1 - b1 ** st["t"]), st["v"] / (1 - b2 ** st["t"])
        adam = m_hat / (v_hat.sqrt() + self.eps) / low.numel() ** 0.5
        out = st["basis"] @ adam if out_side else adam @ st["basis"].T
        return out.to(g.dtype)


# Each preconditioner made from the module rank (galore keeps its change within it).
PRECONDITIONERS: dict[str, Callable[[int], Any]] = {
    "factored": lambda rank: Factored(),
    "whiten": lambda rank: Whiten(),
    "galore": lambda rank: Projected(rank),
}


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
    precondition: Factored | Whiten | Projected | None = None,
) -> list[float]:
    """Step each layer's weights by step_size[name] along its decoded gradient (earlier
    rounds' subspaces removed); returns the decoded gradients' norms (and, in `applied`, each
    layer's change, so a caller can take part of it back). `gradient` replaces the decoding
    (benchmarks/r2f_oracle.py steps along the true gradient to tell the decoder's part);
    `heading` turns each unit gradient into the direction stepped along (--r2f-momentum);
    `precondition` rescales each gradient before that (--r2f-precondition)."""
    import torch

    bases: dict[str, Any] = {}

    def decoded(ly: Layer) -> Any:
        if not bases:
            bases.update(shared_bases(layers, cap.inputs, lambda x: dec.params(x.kind, x.depth)[0]))
        sketches, a = cap.sketches[ly.name], [a[ly.name] for a in a_views]
        return dec.decode(ly.kind, ly.depth, sketches, a, bases[ly.name])

    gradient, heading = gradient or decoded, heading or Momentum()
    norms = []
    with torch.no_grad():
        for ly in layers:
            g = gradient(ly)
            if precondition is not None:  # before the projection, which it would undo
                g = precondition(ly.name, g, cap.inputs.get(ly.name))
            q = (protect or {}).get(ly.name)
            if q is not None:  # no component in earlier rounds' subspaces
                g = g - (g @ q.to(g.device)) @ q.T.to(g.device)
            w, gn = mods[ly.name].weight, float(g.norm())
            if gn > 0:
                scaled = getattr(precondition, "scaled", False)
                unit = g if scaled else heading(ly.name, g / gn)
                change = -step_size[ly.name] * unit.to(w.dtype)
                w += change
                if applied is not None:
                    applied[ly.name] = change
            norms.append(gn)
    return norms
