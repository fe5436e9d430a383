"""Generic preference without a reference: the generic rewrite more likely than the answer.

The same pairs as generic DPO (the answer rejected, its judge's spans made "someone" chosen),
scored on the model's own log-probabilities, as SimPO does (Meng et al., arXiv 2405.14734,
without its length normalisation: the two answers share every token outside the spans, so the
sums differ only around them). DPO's margin is a gain over the reference and is won while the
name stays the likelier word; this margin is won only when "someone" is likelier than the name,
which is what greedy decoding reads. Meant for the attacked term (`--tamper-loss generic-pref`):
a relearning attacker that raises the names must leave "someone" ahead.
"""

from __future__ import annotations

from reveal_release.train.losses.base import FORGET_LOSSES
from reveal_release.train.losses.generic_dpo import GenericDPO, dpo_loss


@FORGET_LOSSES.register("generic-pref")
class GenericPreference(GenericDPO):
    """(2/beta) * mean softplus(-beta * (log p(chosen) - log p(rejected))), no reference."""

    needs_reference = False

    def __call__(self, logp, n, ref_logp, cfg):
        rejected, chosen = logp
        return dpo_loss(rejected, chosen, 0.0, 0.0, cfg.beta)  # DPO's margin, references at 0
