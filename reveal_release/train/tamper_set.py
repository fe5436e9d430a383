"""The attacked term under its own forget loss (--tamper-loss), for tamper-resistant rounds.

The simulated attacker (adversary.py) fine-tunes on whole forget answers, as `rr eval`'s
relearning attack does; what decides whether the target comes back is whether that raises the
target's own tokens again. With the judge's spans, npo here scores the names alone on other
forget answers at the attacked point, and keeps pushing as long as the attack raises them
(a DPO margin over whole answers is won inside the round and stops pushing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reveal_release.errors import RRError
from reveal_release.train.config import ObjectiveConfig, OptimConfig
from reveal_release.train.data import Example, collate, encode_rows, focused, other_indices
from reveal_release.train.logprobs import forget_logps, reference_logps
from reveal_release.train.losses import FORGET_LOSSES


class TamperSet:
    """The attacked term under its own forget loss (--tamper-loss): that loss's rows of the
    forget set (with the judge's spans, npo scores the names alone), their reference
    log-probs, and the batch of other answers it scores after each simulated attack."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        forget_rows: Sequence[dict],
        name: str,
        optim: OptimConfig,
        seed: int,
    ):
        self.loss_fn = FORGET_LOSSES.get(name)()
        self.model, self.pad, self.seed = model, tokenizer.pad_token_id, seed
        self.batch_size = optim.batch_size
        rows = self.loss_fn.training_rows(forget_rows)
        self.examples = focused(encode_rows(tokenizer, rows, optim.max_length))
        if not self.examples:
            raise RRError(f"--tamper-loss {name}: the forget set has no usable answers")
        self.keys = [tuple(e.input_ids) for e in self.examples]
        self.ref = None
        if self.loss_fn.needs_reference:
            self.ref = reference_logps(model, self.examples, self.pad, optim.batch_size)

    def loss(
        self, attacked: Sequence[Example], step: int, cfg: ObjectiveConfig, sync: Any = None
    ) -> Any:
        """The loss of up to a batch of answers other than `attacked` (the attacker's own
        when there are no others), under the model as it is now; with `sync` of several
        processes, this process's shard of them, weighted by its share."""
        seen = {tuple(e.input_ids) for e in attacked}
        taken = {i for i, key in enumerate(self.keys) if key in seen}
        n = len(self.examples)
        idx = other_indices(n, taken, self.batch_size, self.seed, step)
        idx = idx or sorted(taken)[: self.batch_size]
        idx, weight = sync.split(idx) if sync is not None else (idx, 1.0)
        batch = collate([self.examples[i] for i in idx], self.pad, self.model.device)
        logp, n = forget_logps(self.model, batch)
        ref = self.ref[idx] if self.ref is not None else None
        return self.loss_fn(logp, n, ref, cfg) * weight
