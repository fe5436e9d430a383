"""Log-probabilities of answer tokens (labels other than -100) under a model's logits."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from reveal_release.train.data import IGNORE, Example, collate


def token_logps(logits: Any, labels: Any) -> tuple[Any, Any]:
    """(log p of each next token, mask of answer positions), both batch x (length - 1); the
    softmax is taken at the answer positions only (0 elsewhere)."""
    import torch

    shifted = labels[:, 1:]
    mask = shifted != IGNORE
    scores = logits[:, :-1][mask].float()  # answer positions x vocabulary
    own = torch.log_softmax(scores, dim=-1).gather(-1, shifted[mask].unsqueeze(-1)).squeeze(-1)
    picked = torch.zeros(shifted.shape, dtype=own.dtype, device=own.device)
    picked[mask] = own
    return picked, mask


def sequence_logps_from_logits(logits: Any, labels: Any) -> tuple[Any, Any]:
    """(sum of answer-token log-probs, answer-token count) per sequence."""
    picked, mask = token_logps(logits, labels)
    return (picked * mask).sum(-1), mask.sum(-1)


def keeps_logits(model: Any) -> bool:
    """Whether the model's forward takes logits_to_keep (transformers' causal LMs do)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _takes_logits_to_keep(type(inner))


@functools.cache
def _takes_logits_to_keep(cls: type) -> bool:
    import inspect

    return "logits_to_keep" in inspect.signature(cls.forward).parameters


def answer_start(labels: Any) -> int:
    """The position before a batch's first answer token: logits before it are never scored."""
    answer = (labels != IGNORE).any(0).nonzero()
    return max(int(answer[0]) - 1, 0) if len(answer) else 0


def answer_logits(model: Any, batch: dict, labels: str = "labels") -> tuple[Any, Any]:
    """(logits, labels) from the position before the batch's first answer token on: the prompt
    before it needs no vocabulary projection (the head's cost; all positions without
    logits_to_keep)."""
    lab = batch[labels]
    start = answer_start(lab)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if start == 0 or not keeps_logits(model):
        return model(**inputs).logits, lab
    return model(**inputs, logits_to_keep=lab.shape[1] - start).logits, lab[:, start:]


def sequence_logps(model: Any, batch: dict, labels: str = "labels") -> tuple[Any, Any]:
    """(sum of answer-token log-probs, answer-token count) for each sequence of a batch, over
    the batch's `labels` entry."""
    return sequence_logps_from_logits(*answer_logits(model, batch, labels))


def answer_nll(model: Any, batch: dict) -> Any:
    """The mean answer-token NLL of a batch (what a relearning attacker minimises)."""
    logp, n = sequence_logps(model, batch)
    return -(logp.sum() / n.sum())


def forget_logps(model: Any, batch: dict) -> tuple[Any, Any]:
    """Like sequence_logps, over the focus tokens when the batch has them (else every answer
    token): what a forget loss scores."""
    return sequence_logps(model, batch, "focus_labels" if "focus_labels" in batch else "labels")


def reference_logps(model: Any, examples: Sequence[Example], pad_id: int, batch_size: int) -> Any:
    """Per-sequence answer log-probs under the reference (adapter off), computed once."""
    import torch

    out = []
    with torch.no_grad(), model.disable_adapter():
        for lo in range(0, len(examples), batch_size):
            batch = collate(examples[lo : lo + batch_size], pad_id, model.device)
            out.append(forget_logps(model, batch)[0])
    return torch.cat(out)
