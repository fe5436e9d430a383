"""SimNPO (Fan et al. 2024): -(2/beta) * mean logsigmoid(-beta * logp / n - gamma), no reference."""

from __future__ import annotations

from reveal_release.train.losses.base import FORGET_LOSSES, ForgetLoss


@FORGET_LOSSES.register("simnpo")
class SimNPO(ForgetLoss):
    """NPO with a length-normalised reward and no reference model."""

    def __call__(self, logp, n, ref_logp, cfg):
        import torch.nn.functional as F

        reward = logp / n.clamp(min=1)
        return -(2.0 / cfg.beta) * F.logsigmoid(-cfg.beta * reward - cfg.gamma).mean()
