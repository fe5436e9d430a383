"""Gradient decoders: sketches (S_v = G A_v^T) back to a full gradient G_hat, per layer.

`analytic`: G_hat = mean_v S_v A_v / (r sigma^2), unbiased when A has i.i.d. entries of
variance sigma^2 (E[A^T A] = r sigma^2 I). `subspace` (the fitted decoder): G's rows lie in
the span of the layer's inputs, so solve for G = M U^T inside the top-k input directions U
(ridge lambda), from all views at once. Its only parameters, k and lambda per layer kind and
relative depth, are fitted on a proxy model; they do not depend on widths or layer count.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reveal_release.errors import RRError
from reveal_release.schema import NUMBER, check, read_json

FORMAT = 1
K_GRID = (4, 8, 16, 32, 64)
LAMBDA_GRID = (1e-3, 1e-2, 1e-1, 1.0)
BUCKETS = 3  # relative depth: early, middle, late
CONFIG_SCHEMA = {
    "format": int, "kind": str, "kinds": [str], "rank": int, "views": int, "proxy": str,
    "k_grid": [int], "lambda_grid": [NUMBER], "buckets": int,
}  # fmt: skip


def bucket(depth: float) -> int:
    """The depth bucket of a layer at relative depth 0..1."""
    return min(BUCKETS - 1, int(depth * BUCKETS))


def analytic(sketches: Sequence[Any], a_mats: Sequence[Any]) -> Any:
    """Unbiased baseline: mean over views of S_v A_v / (r sigma^2), sigma^2 from A itself."""
    r, d_in = a_mats[0].shape
    sigma2 = sum(float((a**2).mean()) for a in a_mats) / len(a_mats)
    total = sum(s @ a.to(s.device) for s, a in zip(sketches, a_mats, strict=True))
    return total / (len(a_mats) * r * sigma2)


def input_basis(inputs: Sequence[Any], k_max: int = max(K_GRID)) -> Any:
    """The top input directions of a layer (d_in x k), from the rows it saw in forward passes."""
    import torch

    x = torch.cat(list(inputs))
    q = min(k_max, x.shape[0], x.shape[1])
    _, _, v = torch.svd_lowrank(x, q=q, niter=3)
    return v[:, :q]


def shared_bases(
    layers: Sequence[Any], inputs: dict[str, Sequence[Any]], k_of: Callable[[Any], int]
) -> dict[str, Any]:
    """Each layer's input basis, to twice the largest k (`k_of(layer)`) used on it, computed once
    for consecutive layers that kept the same input rows (q, k and v read one tensor; gate and
    up another, and the capture keeps one copy of their rows)."""
    groups: list[list[Any]] = []
    for ly in layers:
        rows = inputs[ly.name]
        last = inputs[groups[-1][0].name] if groups else None
        if last is not None and len(last) == len(rows) and all(map(operator.is_, last, rows)):
            groups[-1].append(ly)
        else:
            groups.append([ly])
    out = {}
    for group in groups:
        k = min(max(K_GRID), 2 * max(k_of(ly) for ly in group))
        u = input_basis(inputs[group[0].name], k_max=k)
        out.update({ly.name: u for ly in group})
    return out


def subspace_solve(
    sketches: Sequence[Any], a_mats: Sequence[Any], basis: Any, k: int, lam: float
) -> Any:
    """M (d_out x k) with G_hat = M U_k^T, least squares over the views with ridge lam."""
    import torch

    u = basis[:, : min(k, basis.shape[1])]
    ps = [a.to(u.device, u.dtype) @ u for a in a_mats]  # r x k each (A may live on the CPU)
    lhs = sum(p.T @ p for p in ps)
    rhs = sum(s.to(u.device) @ p for s, p in zip(sketches, ps, strict=True))
    scale = float(torch.trace(lhs)) / lhs.shape[0] or 1.0
    eye = torch.eye(lhs.shape[0], dtype=lhs.dtype, device=lhs.device)
    return torch.linalg.solve(lhs + lam * scale * eye, rhs.T).T


def cosine(a: Any, b: Any) -> float:
    """Cosine of two matrices as vectors (0 when either is zero)."""
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den else 0.0


@dataclass
class SubspaceDecoder:
    """Fitted (k, lambda) per layer kind and depth bucket, with the proxy's cosine grid."""

    kinds: list[str]
    rank: int
    views: int
    proxy: str = ""
    scores: Any = None  # tensor [kinds, BUCKETS, len(K_GRID), len(LAMBDA_GRID)]
    extra: dict[str, Any] = field(default_factory=dict)

    def params(self, kind: str, depth: float) -> tuple[int, float]:
        """(k, lambda) for a layer; a clear error for a kind the decoder has no mapping for."""
        if kind not in self.kinds:
            raise RRError(
                f"the decoder has no mapping for '{kind}' layers (it knows "
                f"{', '.join(self.kinds)}): fit one with those layers "
                f"(rr r2f fit --layers ...)"
            )
        grid = self.scores[self.kinds.index(kind), bucket(depth)]
        flat = int(grid.argmax())
        return K_GRID[flat // len(LAMBDA_GRID)], LAMBDA_GRID[flat % len(LAMBDA_GRID)]

    def decode(
        self, kind: str, depth: float, sketches: Sequence[Any], a_mats: Sequence[Any], basis: Any
    ) -> Any:
        """G_hat for one layer."""
        k, lam = self.params(kind, depth)
        u = basis[:, : min(k, basis.shape[1])]
        return subspace_solve(sketches, a_mats, basis, k, lam) @ u.T

    def save(self, path: Path) -> None:
        """decoder.json (config) and decoder.safetensors (the cosine grid) in folder `path`."""
        from safetensors.torch import save_file

        from reveal_release.atomic import atomic_dir, atomic_write_json

        with atomic_dir(path) as tmp:
            save_file({"scores": self.scores.contiguous()}, str(tmp / "decoder.safetensors"))
            atomic_write_json(
                tmp / "decoder.json",
                {
                    "format": FORMAT,
                    "kind": "subspace",
                    "kinds": self.kinds,
                    "rank": self.rank,
                    "views": self.views,
                    "proxy": self.proxy,
                    "k_grid": list(K_GRID),
                    "lambda_grid": list(LAMBDA_GRID),
                    "buckets": BUCKETS,
                    **self.extra,
                },
            )


def load_decoder(path: Path) -> SubspaceDecoder:
    """Read a saved decoder; a one-line error for a missing, corrupt or other-version file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg_path, w_path = Path(path) / "decoder.json", Path(path) / "decoder.safetensors"
    if not cfg_path.is_file() or not w_path.is_file():
        raise RRError(
            f"{path} is not a decoder folder (needs decoder.json and decoder.safetensors): "
            "make one with `rr r2f fit`"
        )
    fix = "fit it again with `rr r2f fit`"
    cfg = read_json(cfg_path, dict, fix)
    if cfg.get("format") != FORMAT or cfg.get("kind") != "subspace":
        raise RRError(
            f"decoder in {path} has format {cfg.get('format')!r}, this rr reads {FORMAT}: "
            "fit it again with this version (rr r2f fit)"
        )
    check(cfg, CONFIG_SCHEMA, cfg_path, fix)
    try:
        scores = load_file(str(w_path))["scores"]
    except (SafetensorError, KeyError, OSError) as exc:
        raise RRError(f"{w_path} is corrupt ({exc}): {fix}") from None
    shape = (len(cfg["kinds"]), cfg["buckets"], len(cfg["k_grid"]), len(cfg["lambda_grid"]))
    if tuple(scores.shape) != shape or list(cfg["k_grid"]) != list(K_GRID):
        raise RRError(f"decoder in {path} does not match its config: fit it again")
    extra = {
        k: v
        for k, v in cfg.items()
        if k
        not in (
            "format",
            "kind",
            "kinds",
            "rank",
            "views",
            "proxy",
            "k_grid",
            "lambda_grid",
            "buckets",
        )
    }
    return SubspaceDecoder(cfg["kinds"], cfg["rank"], cfg["views"], cfg["proxy"], scores, extra)
