"""Retain KL: KL(reference || model) on the retain answers' tokens; the reference is adapter-off."""

from __future__ import annotations

from reveal_release.train.data import IGNORE
from reveal_release.train.logprobs import answer_logits
from reveal_release.train.losses.base import RETAIN_LOSSES, RetainLoss


def answer_dists(logits, labels):
    """Next-token log-probs (answer positions x vocabulary) of logits that cover the last
    positions of `labels` (all of them, or answer_logits' cut)."""
    import torch.nn.functional as F

    shifted = labels[:, labels.shape[1] - logits.shape[1] :][:, 1:]
    return F.log_softmax(logits[:, :-1][shifted != IGNORE].float(), -1)


def answer_log_probs(model, batch):
    """The model's next-token log-probs at the batch's answer positions (rows in batch order)."""
    return answer_dists(*answer_logits(model, batch))


@RETAIN_LOSSES.register("kl")
class RetainKL(RetainLoss):
    """Hold the whole next-token distribution on retain answers, not only the sampled token."""

    def reference(self, model, batch):
        """The adapter-off model's next-token log-probs on the answer positions."""
        import torch

        with torch.no_grad(), model.disable_adapter():
            return answer_log_probs(model, batch)

    def rows(self, ref, batch):
        """The reference's answer positions, cut at each sequence's end."""
        return list(ref.split((batch["labels"][:, 1:] != IGNORE).sum(1).tolist()))

    def __call__(self, model, batch, cfg, ref=None):
        import torch.nn.functional as F

        ref = self.reference(model, batch) if ref is None else ref
        cur = answer_log_probs(model, batch)
        return F.kl_div(cur, ref, log_target=True, reduction="batchmean")
