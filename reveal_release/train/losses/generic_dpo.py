"""Generic DPO: prefer each forget answer with its target spans made generic over the answer
itself, against the adapter-off reference.

DPO's loss (Rafailov et al., arXiv 2305.18290) with the original answer as the rejected one
and its generic rewrite (Eldan & Russinovich, arXiv 2310.02238; here the judge's spans become
"someone") as the chosen one, as TOFU's IdkDPO does with "I don't know" (Maini et al., arXiv
2401.06121). The two answers share every token outside the spans, so the margin moves the
names down and the generic word up at the same places and leaves the rest of the answer
alone; the sigmoid stops the push once the margin is won.
"""

from __future__ import annotations

from collections.abc import Sequence

from reveal_release.train.losses.base import FORGET_LOSSES, ForgetLoss
from reveal_release.train.losses.generic import generic_rows, marked_rows


def dpo_loss(rejected, chosen, ref_rejected, ref_chosen, beta: float):
    """(2/beta) * mean softplus(-beta * margin), margin = chosen's gain - rejected's gain."""
    import torch.nn.functional as F

    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    return (2.0 / beta) * F.softplus(-beta * margin).mean()


@FORGET_LOSSES.register("generic-dpo")
class GenericDPO(ForgetLoss):
    """DPO of the generic rewrite (chosen) over the original forget answer (rejected)."""

    needs_reference = True
    needs_spans = True

    def training_rows(self, rows: Sequence[dict]) -> list[dict]:
        """The answers that mark a span (the rejected side), scored over every answer token."""
        return [{**r, "focus": None} for r in marked_rows(rows, "generic-dpo")]

    def chosen_rows(self, rows: Sequence[dict]) -> list[dict]:
        """The same answers with their spans made generic, in the same order."""
        return generic_rows(rows, "generic-dpo")

    def __call__(self, logp, n, ref_logp, cfg):
        (rejected, chosen), (ref_rejected, ref_chosen) = logp, ref_logp
        return dpo_loss(rejected, chosen, ref_rejected, ref_chosen, cfg.beta)
