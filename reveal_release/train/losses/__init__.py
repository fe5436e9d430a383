"""Forget and retain losses behind two registries (importing this package fills them)."""

from reveal_release.train.losses import (  # noqa: F401
    ga,
    generic,
    generic_dpo,
    generic_pref,
    npo,
    refusal,
    retain_kl,
    retain_nll,
    simnpo,
)
from reveal_release.train.losses.base import FORGET_LOSSES, RETAIN_LOSSES, ForgetLoss, RetainLoss

__all__ = ["FORGET_LOSSES", "RETAIN_LOSSES", "ForgetLoss", "RetainLoss"]
