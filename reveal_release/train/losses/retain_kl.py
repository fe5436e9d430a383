"""Retain KL: KL(reference || model) on the retain answers' tokens; the reference is adapter-off."""

from __future__ import annotations

from reveal_release.train.data import IGNORE
from reveal_release.train.losses.base import RETAIN_LOSSES, RetainLoss


@RETAIN_LOSSES.register("kl")
class RetainKL(RetainLoss):
    """Hold the whole next-token distribution on retain answers, not only the sampled token."""

    def __call__(self, model, batch, cfg):
        import torch
        import torch.nn.functional as F

        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        mask = batch["labels"][:, 1:] != IGNORE
        with torch.no_grad(), model.disable_adapter():
            ref = F.log_softmax(model(**inputs).logits[:, :-1].float(), -1)[mask]
        cur = F.log_softmax(model(**inputs).logits[:, :-1].float(), -1)[mask]
        return F.kl_div(cur, ref, log_target=True, reduction="batchmean")
