"""Quantisation attacks: forgetting done with small weight changes can vanish on a coarser grid.

Each quantises a copy of the model (every linear layer but the head, round-to-nearest) in one
of the formats users deploy, then asks the held-out probes again. On the released model it also
records the share of the copy's codes that differ from the quantised base's: the part of the
release that survives this format.
"""

from __future__ import annotations

from typing import Any

from reveal_release.errors import RRError
from reveal_release.evaluate.attacks.base import (
    ATTACKS,
    Attack,
    AttackContext,
    AttackSkipped,
    working_copy,
)
from reveal_release.metrics.perplexity import perplexity
from reveal_release.metrics.probes import reveal_rate
from reveal_release.metrics.qa import qa_accuracy, retain_items
from reveal_release.models import LoadedModel
from reveal_release.quantizers import SCHEMES, changed_share, codes_of, quantize_model


class _Quantize(Attack):
    scheme = ""
    on_base = True  # the quantised base is the reference

    def run(self, ctx: AttackContext, loaded: LoadedModel) -> dict[str, Any]:
        """Held-out reveal rate, QA accuracy and perplexity of a round-to-nearest quantised copy."""
        out: dict[str, Any] = {"scheme": self.scheme}
        if ctx.base is not None and loaded is not ctx.base:
            share = changed_share(
                codes_of(ctx.base.model, self.scheme), codes_of(loaded.model, self.scheme)
            )
            if share is not None:  # None: a base of another shape, no codes to compare
                out["codes_changed"] = share
        q = working_copy(loaded)
        try:
            layers = quantize_model(q.model, self.scheme)
        except RRError as exc:
            raise AttackSkipped(str(exc)) from None
        if not layers:
            raise AttackSkipped("the model has no torch.nn.Linear layers to quantise")
        probes = reveal_rate(
            q, ctx.spec, ctx.judge, ctx.probes, max_new_tokens=ctx.settings["max_new_tokens"]
        )
        qa = qa_accuracy(q, retain_items(ctx.spec.tags(), ctx.settings["qa_limit"])[0])
        out.update(
            reveal_rate=probes.rate, n=probes.n, layers=layers, perplexity=perplexity(q),
            qa_accuracy=qa.accuracy,
        )  # fmt: skip
        return out


def _about(scheme: str) -> str:
    return f"{SCHEMES[scheme].description}; round-to-nearest, all linear layers but the head"


@ATTACKS.register("quant-int8")
class Int8(_Quantize):
    """Weights rounded to int8, one scale per output row (symmetric)."""

    scheme = "int8"
    description = _about("int8")


@ATTACKS.register("quant-int4")
class Int4(_Quantize):
    """Weights rounded to 4 bits in groups of 32 (asymmetric): the grid of GGUF Q4_1."""

    scheme = "int4"
    description = _about("int4")


@ATTACKS.register("quant-int4-g128")
class Int4G128(_Quantize):
    """Weights rounded to 4 bits in groups of 128 (asymmetric)."""

    scheme = "int4-g128"
    description = _about("int4-g128")


@ATTACKS.register("quant-int4-sym")
class Int4Sym(_Quantize):
    """Weights rounded to 4 bits in groups of 32, symmetric (a grid like GGUF Q4_0's)."""

    scheme = "int4-sym"
    description = _about("int4-sym")
