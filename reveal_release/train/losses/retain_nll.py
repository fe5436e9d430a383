"""Retain NLL: keep saying what the model said before (mean token NLL of the retain answers)."""

from __future__ import annotations

from reveal_release.train.logprobs import sequence_logps
from reveal_release.train.losses.base import RETAIN_LOSSES, RetainLoss


@RETAIN_LOSSES.register("nll")
class RetainNLL(RetainLoss):
    """Mean token NLL of the retain answers."""

    def __call__(self, model, batch, cfg, ref=None):
        logp, n = sequence_logps(model, batch)
        return -logp.sum() / n.sum().clamp(min=1)
