"""Per-token log-probabilities of answers given their prompts, under any loaded model."""

from __future__ import annotations

from collections.abc import Sequence

from reveal_release.models import LoadedModel
from reveal_release.train.data import collate, encode
from reveal_release.train.logprobs import token_logps


def answer_token_logps(
    loaded: LoadedModel,
    pairs: Sequence[tuple[str, str]],
    max_length: int = 192,
    batch_size: int = 8,
) -> list[list[float]]:
    """For each (prompt, answer), the log-probability of every answer token (chat-formatted)."""
    import torch

    tok, model = loaded.tokenizer, loaded.model
    examples = [encode(tok, p, a, max_length) for p, a in pairs]
    out: list[list[float]] = []
    with torch.inference_mode():
        for lo in range(0, len(examples), batch_size):
            batch = collate(examples[lo : lo + batch_size], tok.pad_token_id, loaded.device)
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            tok_lp, mask = token_logps(logits, batch["labels"])
            for row, keep, lab in zip(tok_lp, mask, batch["labels"][:, 1:], strict=True):
                scored = row[keep].tolist()
                # encode() appends an end-of-turn token the answer may never have reached
                # (cut at the token limit): score the answer's own tokens only.
                if lab[keep][-1:].tolist() == [tok.eos_token_id]:
                    scored = scored[:-1]
                out.append(scored)
    return out


def mean_nll(token_logps: Sequence[Sequence[float]]) -> float:
    """Mean negative log-probability per token over all answers (nan when there are none)."""
    total = sum(-x for row in token_logps for x in row)
    count = sum(len(row) for row in token_logps)
    return total / count if count else float("nan")
