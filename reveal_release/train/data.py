"""Training data: chat-formatted (prompt, response) pairs with prompt tokens masked, in batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reveal_release.generation import chat_text

IGNORE = -100


@dataclass(frozen=True)
class Example:
    """One training sequence: token ids and labels (-100 on the prompt)."""

    input_ids: list[int]
    labels: list[int]


def encode(tokenizer: Any, prompt: str, response: str, max_length: int) -> Example:
    """Tokenise a chat turn; only the response (and its end-of-turn token) is a label."""
    head = chat_text(tokenizer, prompt)
    end = tokenizer.eos_token or ""
    p_ids = tokenizer(head, add_special_tokens=False).input_ids
    r_ids = tokenizer(response.strip() + end, add_special_tokens=False).input_ids
    # Keep the whole prompt if possible; cut the response to fit.
    p_ids = p_ids[-(max_length // 2) :] if len(p_ids) > max_length // 2 else p_ids
    r_ids = r_ids[: max_length - len(p_ids)]
    return Example(p_ids + r_ids, [IGNORE] * len(p_ids) + r_ids)


def encode_rows(
    tokenizer: Any, rows: Sequence[dict], max_length: int, response: str | None = None
) -> list[Example]:
    """Encode run rows (prompt, response); `response` replaces every answer when given."""
    return [
        encode(tokenizer, r["prompt"], response or r["response"], max_length)
        for r in rows
        if (response or r["response"]).strip()
    ]


def collate(batch: Sequence[Example], pad_id: int, device: Any = "cpu") -> dict[str, Any]:
    """Right-pad a batch into input_ids, attention_mask and labels tensors."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
    }


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The example indices of one step: a fixed function of (seed, step), so resume is exact."""
    import torch

    from reveal_release.train.seeds import batch_order

    g = torch.Generator().manual_seed(batch_order(seed, step))
    if n >= batch_size:
        return torch.randperm(n, generator=g)[:batch_size].tolist()
    return torch.randint(0, n, (batch_size,), generator=g).tolist()
