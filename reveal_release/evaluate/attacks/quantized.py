"""Quantisation attack: forgetting done with small weight changes can vanish on a coarser grid."""

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
from reveal_release.metrics.quantizers import SCHEMES, quantize_model
from reveal_release.models import LoadedModel


class _Quantize(Attack):
    scheme = ""
    on_base = True  # the quantised base is the reference

    def run(self, ctx: AttackContext, loaded: LoadedModel) -> dict[str, Any]:
        """Held-out reveal rate and perplexity of a round-to-nearest quantised copy."""
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
        out = {"reveal_rate": probes.rate, "n": probes.n, "layers": layers}
        out["perplexity"] = perplexity(q)
        del q
        return out


@ATTACKS.register("quant-int8")
class Int8(_Quantize):
    """Weights rounded to int8, one scale per output row (symmetric)."""

    scheme = "int8"
    description = "int8 round-to-nearest, per output row, all linear layers but the head"


@ATTACKS.register("quant-int4")
class Int4(_Quantize):
    """Weights rounded to 4 bits in groups of 32 (asymmetric)."""

    scheme = "int4"
    description = (
        f"4-bit round-to-nearest, groups of {SCHEMES['int4'][1]}, all linear layers but the head"
    )
