"""NPO (Zhang et al. 2024): (2/beta) * mean log(1 + (p/p_ref)^beta), bounded and stable."""

from __future__ import annotations

from typing import Any

from reveal_release.train.losses.base import FORGET_LOSSES, ForgetLoss


def npo_loss(logp: Any, ref_logp: Any, beta: float) -> Any:
    """(2/beta) * mean softplus(beta * (logp - ref_logp)) over sequences."""
    import torch.nn.functional as F

    return (2.0 / beta) * F.softplus(beta * (logp - ref_logp)).mean()


@FORGET_LOSSES.register("npo")
class NPO(ForgetLoss):
    """Negative preference optimisation against the adapter-off reference."""

    needs_reference = True

    def __call__(self, logp, n, ref_logp, cfg):
        return npo_loss(logp, ref_logp, cfg.beta)
