"""The loss interfaces and their registries; each loss is one file and one registered name.

Forget losses see per-sequence log-probabilities of the forget answers under the model being
trained (`logp`, summed over answer tokens), their token counts `n`, and the same sums under
the reference model (`ref_logp`: the same weights with the adapter off), never the model.
A paired loss (DPO) sees (rejected, chosen) pairs of each: its training rows and its chosen rows.
Retain losses see the model and a batch of retain sequences, and what their reference()
computed on the batch beforehand (so a quantisation-aware pass can reuse it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from reveal_release.registry import Registry


class ForgetLoss(ABC):
    """A forget objective over per-sequence answer log-probabilities."""

    needs_reference: bool = False
    bounded: bool = True  # >= 0 and near 0 once forgotten, so convergence can end a round
    needs_spans: bool = False  # it reads the judge's target spans (rows' `focus`)

    def chosen_rows(self, rows: Sequence[dict]) -> list[dict] | None:
        """For a paired loss, the answer it prefers to each training row, in the same order
        (None: not paired; a paired loss's logp and ref_logp are (rejected, chosen) pairs)."""
        return None

    def training_rows(self, rows: Sequence[dict]) -> list[dict]:
        """The (prompt, response) rows this loss trains on (the forget rows themselves)."""
        return list(rows)

    @abstractmethod
    def __call__(self, logp: Any, n: Any, ref_logp: Any, cfg: Any) -> Any:
        """The loss to minimise (a scalar tensor); cfg carries beta and gamma."""


class RetainLoss(ABC):
    """A retain objective over a batch of retain sequences."""

    def reference(self, model: Any, batch: dict) -> Any:
        """What the loss compares against, computed with the adapter off (None: nothing)."""
        return None

    def rows(self, ref: Any, batch: dict) -> list[Any] | None:
        """A batch's reference (a tensor) split into one part per sequence, which concatenate
        back in batch order; None: it does not split, and each step computes its own."""
        return None

    @abstractmethod
    def __call__(self, model: Any, batch: dict, cfg: Any, ref: Any = None) -> Any:
        """The loss to minimise (a scalar tensor); `ref` is what reference() gave."""


FORGET_LOSSES: Registry[type[ForgetLoss]] = Registry("forget loss")
RETAIN_LOSSES: Registry[type[RetainLoss]] = Registry("retain loss")
