"""Forget and retain losses behind two registries; a new loss is one class and one name.

Forget losses see only per-sequence log-probabilities of the forget answers under the model
being trained (`logp`, summed over answer tokens), their token counts `n`, and the same sums
under the reference model (`ref_logp`, the model before this round: adapters off):

- npo:     (2/beta) * mean log(1 + (p/p_ref)^beta) = (2/beta) * mean softplus(beta*(logp - ref))
- ga:      gradient ascent on the answers' NLL: minimise the mean token log-probability
- refusal: NLL of refusals ("I can't help with that") to the forget prompts
- simnpo:  -(2/beta) * mean logsigmoid(-beta * logp / n - gamma)   (no reference model)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from reveal_release.registry import Registry
from reveal_release.release.config import ReleaseConfig
from reveal_release.release.data import IGNORE


class ForgetLoss(ABC):
    """A forget objective over per-sequence answer log-probabilities."""

    needs_reference: bool = False
    refusal_data: bool = False  # trains on refusals to the forget prompts instead
    bounded: bool = True  # >= 0 and near 0 once forgotten, so convergence can end a round

    @abstractmethod
    def __call__(self, logp: Any, n: Any, ref_logp: Any, cfg: ReleaseConfig) -> Any:
        """The loss to minimise (a scalar tensor)."""


class RetainLoss(ABC):
    """A retain objective over a batch of retain sequences."""

    @abstractmethod
    def __call__(self, model: Any, batch: dict, cfg: ReleaseConfig) -> Any:
        """The loss to minimise (a scalar tensor)."""


FORGET_LOSSES: Registry[type[ForgetLoss]] = Registry("forget loss")
RETAIN_LOSSES: Registry[type[RetainLoss]] = Registry("retain loss")


def sequence_logps(model: Any, batch: dict) -> tuple[Any, Any]:
    """(sum of answer-token log-probs, answer-token count) for each sequence of a batch."""
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    nll = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view(labels.shape)
    mask = labels != IGNORE
    return -(nll * mask).sum(-1), mask.sum(-1)


@FORGET_LOSSES.register("npo")
class NPO(ForgetLoss):
    """Negative preference optimisation (Zhang et al. 2024): bounded, stable forgetting."""

    needs_reference = True

    def __call__(self, logp, n, ref_logp, cfg):
        import torch.nn.functional as F

        return (2.0 / cfg.beta) * F.softplus(cfg.beta * (logp - ref_logp)).mean()


@FORGET_LOSSES.register("ga")
class GradientAscent(ForgetLoss):
    """Gradient ascent on the forget answers' NLL (fast, known to collapse utility)."""

    bounded = False  # falls without limit: it runs its steps

    def __call__(self, logp, n, ref_logp, cfg):
        return logp.sum() / n.sum().clamp(min=1)


@FORGET_LOSSES.register("refusal")
class Refusal(ForgetLoss):
    """Teach refusals to the forget prompts (NLL of a refusal answer)."""

    refusal_data = True

    def __call__(self, logp, n, ref_logp, cfg):
        return -logp.sum() / n.sum().clamp(min=1)


@FORGET_LOSSES.register("simnpo")
class SimNPO(ForgetLoss):
    """SimNPO (Fan et al. 2024): NPO with a length-normalised reward and no reference model."""

    def __call__(self, logp, n, ref_logp, cfg):
        import torch.nn.functional as F

        reward = logp / n.clamp(min=1)
        return -(2.0 / cfg.beta) * F.logsigmoid(-cfg.beta * reward - cfg.gamma).mean()


@RETAIN_LOSSES.register("nll")
class RetainNLL(RetainLoss):
    """Mean token NLL of the retain answers: keep saying what the model said before."""

    def __call__(self, model, batch, cfg):
        logp, n = sequence_logps(model, batch)
        return -logp.sum() / n.sum().clamp(min=1)


@RETAIN_LOSSES.register("kl")
class RetainKL(RetainLoss):
    """KL(reference || model) on the retain answers' tokens; the reference is adapters-off."""

    def __call__(self, model, batch, cfg):
        import torch
        import torch.nn.functional as F

        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        mask = batch["labels"][:, 1:] != IGNORE
        with torch.no_grad(), model.disable_adapter():
            ref = F.log_softmax(model(**inputs).logits[:, :-1].float(), -1)[mask]
        cur = F.log_softmax(model(**inputs).logits[:, :-1].float(), -1)[mask]
        return F.kl_div(cur, ref, log_target=True, reduction="batchmean")
