"""Retain KL: KL(reference || model) on the retain answers' tokens; the reference is adapter-off."""

from __future__ import annotations

from reveal_release.train.data import IGNORE
from reveal_release.train.losses.base import RETAIN_LOSSES, RetainLoss


@RETAIN_LOSSES.register("kl")
class RetainKL(RetainLoss):
    """Hold the whole next-token distribution on retain answers, not only the sampled token."""

    def reference(self, model, batch):
        """The adapter-off model's next-token log-probs on the answer positions."""
        import torch
        import torch.nn.functional as F

        with torch.no_grad(), model.disable_adapter():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            return F.log_softmax(logits.logits[:, :-1].float(), -1)[_answers(batch)]

    def __call__(self, model, batch, cfg, ref=None):
        import torch.nn.functional as F

        ref = self.reference(model, batch) if ref is None else ref
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        cur = F.log_softmax(logits.logits[:, :-1].float(), -1)[_answers(batch)]
        return F.kl_div(cur, ref, log_target=True, reduction="batchmean")


def _answers(batch: dict):
    return batch["labels"][:, 1:] != IGNORE
