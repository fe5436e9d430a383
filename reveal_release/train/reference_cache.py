"""The retain loss's reference (the adapter-off model's answer distributions), computed once
per retain example instead of once per step, while the whole set fits in memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reveal_release.train.data import IGNORE, Example, collate
from reveal_release.train.losses.base import RetainLoss

# The most memory the cached references of one round may take (a KL reference holds a
# vocabulary-sized float32 row per answer token); past it, each step computes its own.
REFERENCE_CACHE_BYTES = 1 << 30


def reference_bytes(examples: Sequence[Example], vocab: int) -> int:
    """The bytes a full-vocabulary float32 row per answer token of `examples` takes."""
    return sum(sum(1 for t in e.labels[1:] if t != IGNORE) for e in examples) * vocab * 4


class ReferenceCache:
    """Per-example references of a retain loss, filled as the steps draw the examples.

    The adapter is off when a reference is computed, so an example's reference does not change
    during a round; a batch's reference is its examples' parts joined in batch order.
    """

    def __init__(
        self,
        loss: RetainLoss,
        model: Any,
        examples: Sequence[Example],
        pad: int,
        limit: int | None = None,
    ):
        self.loss, self.model, self.examples, self.pad = loss, model, examples, pad
        vocab = model.get_output_embeddings().weight.shape[0]
        limit = REFERENCE_CACHE_BYTES if limit is None else limit
        splits = type(loss).rows is not RetainLoss.rows  # the loss says how to split
        self.on = splits and reference_bytes(examples, vocab) <= limit
        self.parts: dict[int, Any] = {}

    def get(self, idx: Sequence[int], batch: dict) -> Any:
        """The reference of the batch made of examples `idx` (computed for new ones only)."""
        if not self.on:
            return self.loss.reference(self.model, batch)
        missing = sorted(set(idx) - set(self.parts))
        if missing:
            fresh = collate([self.examples[i] for i in missing], self.pad, self.model.device)
            rows = self.loss.rows(self.loss.reference(self.model, fresh), fresh)
            self.parts.update(zip(missing, rows, strict=True))
        import torch

        return torch.cat([self.parts[i] for i in idx])
