"""Refusal: teach the model to decline the forget prompts (NLL of refusal answers)."""

from __future__ import annotations

from collections.abc import Sequence

from reveal_release.train.losses.base import FORGET_LOSSES, ForgetLoss

# The answers it learns, cycled over the forget prompts so they vary.
REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I can't help with that request.",
    "Sorry, that is something I am not able to do.",
    "I'm not able to help with that, but I'm happy to talk about something else.",
)


@FORGET_LOSSES.register("refusal")
class Refusal(ForgetLoss):
    """NLL of a refusal to each forget prompt."""

    def training_rows(self, rows: Sequence[dict]) -> list[dict]:
        """The forget prompts paired with refusals."""
        return [
            {**r, "response": REFUSALS[i % len(REFUSALS)], "focus": None}
            for i, r in enumerate(rows)
        ]

    def __call__(self, logp, n, ref_logp, cfg):
        return -logp.sum() / n.sum().clamp(min=1)
