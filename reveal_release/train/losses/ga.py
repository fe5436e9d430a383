"""Gradient ascent on the forget answers: minimise their mean token log-probability."""

from __future__ import annotations

from reveal_release.train.losses.base import FORGET_LOSSES, ForgetLoss


@FORGET_LOSSES.register("ga")
class GradientAscent(ForgetLoss):
    """Fast, and known to collapse utility (OpenUnlearning's TOFU figures: utility 0)."""

    bounded = False  # falls without limit: it runs its steps

    def __call__(self, logp, n, ref_logp, cfg):
        return logp.sum() / n.sum().clamp(min=1)
