"""Training data: chat-formatted (prompt, response) pairs with prompt tokens masked, in batches.

A row may carry `focus`: character spans of its response that are the target itself (the
person judge's names). Its example then also has `focus` labels, the answer labels outside
those spans masked, which the forget loss uses instead of the whole answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reveal_release.errors import RRError
from reveal_release.generation import chat_text

IGNORE = -100


@dataclass(frozen=True)
class Example:
    """One training sequence: token ids and labels (-100 on the prompt)."""

    input_ids: list[int]
    labels: list[int]
    focus: list[int] | None = None  # labels inside the focus spans only (None: no focus)

    @property
    def focus_tokens(self) -> int:
        """How many answer tokens the forget loss sees (all of them without a focus)."""
        return sum(1 for t in (self.labels if self.focus is None else self.focus) if t != IGNORE)


def _in_spans(offsets: Sequence[tuple[int, int]], spans: Sequence[Sequence[int]]) -> list[bool]:
    """For each token's character range, whether it overlaps any span."""
    return [any(s < b and e > a for a, b in spans) for s, e in offsets]


def _response_ids(tokenizer: Any, text: str, spans: Sequence[Sequence[int]] | None) -> tuple:
    """The response's token ids and, with spans, which tokens overlap them."""
    if spans is None:
        return tokenizer(text, add_special_tokens=False).input_ids, None
    if not getattr(tokenizer, "is_fast", False):
        raise RRError(
            "focused training needs a fast tokenizer (character offsets): "
            "use a model with tokenizer.json, or pass --focus none"
        )
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return enc.input_ids, _in_spans(enc.offset_mapping, spans)


def encode(
    tokenizer: Any,
    prompt: str,
    response: str,
    max_length: int,
    focus: Sequence[Sequence[int]] | None = None,
) -> Example:
    """Tokenise a chat turn; only the response (and its end-of-turn token) is a label.

    `focus`: character spans of `response` whose tokens alone make the example's focus labels.
    """
    head = chat_text(tokenizer, prompt)
    end = tokenizer.eos_token or ""
    lead = len(response) - len(response.lstrip())
    spans = None if focus is None else [(a - lead, b - lead) for a, b in focus]
    p_ids = tokenizer(head, add_special_tokens=False).input_ids
    r_ids, inside = _response_ids(tokenizer, response.strip() + end, spans)
    # Keep the whole prompt if possible; cut the response to fit.
    p_ids = p_ids[-(max_length // 2) :] if len(p_ids) > max_length // 2 else p_ids
    r_ids = r_ids[: max_length - len(p_ids)]
    pad = [IGNORE] * len(p_ids)
    focused = None
    if inside is not None:
        focused = pad + [t if hit else IGNORE for t, hit in zip(r_ids, inside, strict=False)]
    return Example(p_ids + r_ids, pad + r_ids, focused)


def encode_rows(
    tokenizer: Any, rows: Sequence[dict], max_length: int, response: str | None = None
) -> list[Example]:
    """Encode run rows (prompt, response, optional focus); `response` replaces every answer
    (and drops any focus) when given."""
    out = []
    for r in rows:
        text = response or r["response"]
        if text.strip():
            focus = None if response else r.get("focus")
            out.append(encode(tokenizer, r["prompt"], text, max_length, focus))
    return out


def collate(batch: Sequence[Example], pad_id: int, device: Any = "cpu") -> dict[str, Any]:
    """Right-pad a batch into input_ids, attention_mask and labels tensors."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    focused = any(e.focus is not None for e in batch)
    focus = torch.full((len(batch), width), IGNORE, dtype=torch.long) if focused else None
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
        if focus is not None:
            focus[i, :n] = torch.tensor(e.labels if e.focus is None else e.focus)
    out = {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
    }
    if focus is not None:
        out["focus_labels"] = focus.to(device)
    return out


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The example indices of one step: a fixed function of (seed, step), so resume is exact."""
    import torch

    from reveal_release.train.seeds import batch_order

    g = torch.Generator().manual_seed(batch_order(seed, step))
    if n >= batch_size:
        return torch.randperm(n, generator=g)[:batch_size].tolist()
    return torch.randint(0, n, (batch_size,), generator=g).tolist()


def other_indices(n: int, taken: set[int], batch_size: int, seed: int, step: int) -> list[int]:
    """Up to a batch of indices outside `taken`, in the step's order ([] when all are taken)."""
    order = batch_indices(n, n, seed, step)
    return [i for i in order if i not in taken][:batch_size]


def focused(examples: list[Example]) -> list[Example]:
    """With focus spans, the examples that have focus tokens (an answer whose judge marked
    nothing in it gives the forget loss nothing); all of them when none has a focus."""
    if all(e.focus is None for e in examples):
        return examples
    return [e for e in examples if e.focus_tokens > 0]
