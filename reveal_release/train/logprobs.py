"""Log-probabilities of answer tokens (labels other than -100) under a model's logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reveal_release.train.data import IGNORE, Example, collate


def token_logps(logits: Any, labels: Any) -> tuple[Any, Any]:
    """(log p of each next token, mask of answer positions), both batch x (length - 1)."""
    import torch

    shifted = labels[:, 1:]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, shifted.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked, shifted != IGNORE


def sequence_logps_from_logits(logits: Any, labels: Any) -> tuple[Any, Any]:
    """(sum of answer-token log-probs, answer-token count) per sequence."""
    picked, mask = token_logps(logits, labels)
    return (picked * mask).sum(-1), mask.sum(-1)


def sequence_logps(model: Any, batch: dict, labels: str = "labels") -> tuple[Any, Any]:
    """(sum of answer-token log-probs, answer-token count) for each sequence of a batch, over
    the batch's `labels` entry."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_logps_from_logits(logits, batch[labels])


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
