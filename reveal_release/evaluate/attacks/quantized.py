"""Quantisation attacks: forgetting done with small weight changes can vanish on a coarser grid.

Each quantises a copy of the model (every linear layer but the head, round-to-nearest) in one
of the formats users deploy, then asks the held-out probes again. On the released model it also
records the share of the copy's codes that differ from the quantised base's: the part of the
release that survives this format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reveal_release.errors import RRError
from reveal_release.evaluate.attacks.base import (
    ATTACKS,
    Attack,
    AttackContext,
    AttackSkipped,
    working_copy,
)
from reveal_release.metrics.model_figures import (
    heldout_figures,
    heldout_key,
    model_key,
    quant_key,
    quant_utility_key,
    utility_figures,
    utility_key,
)
from reveal_release.metrics.qa import retain_items
from reveal_release.models import LoadedModel
from reveal_release.quantizers import (
    SCHEMES,
    changed_share,
    codes_of,
    maps_onto_itself,
    quantizable,
    quantize_model,
)


class _Quantize(Attack):
    scheme = ""
    on_base = True  # the quantised base is the reference

    def run(self, ctx: AttackContext, loaded: LoadedModel) -> dict[str, Any]:
        """Held-out reveal rate of a round-to-nearest quantised copy, and its QA accuracy and
        perplexity (unless settings['quant_utility'] is off); each kept in the figure store."""
        out: dict[str, Any] = {"scheme": self.scheme}
        if ctx.base is not None and loaded is not ctx.base:
            share = changed_share(
                codes_of(ctx.base.model, self.scheme), codes_of(loaded.model, self.scheme)
            )
            if share is not None:  # None: a base of another shape, no codes to compare
                out["codes_changed"] = share
        copy = _QuantizedCopy(loaded, self.scheme)
        mnt, store, mk = ctx.settings["max_new_tokens"], ctx.store, model_key(loaded)
        items, left_out = retain_items(ctx.spec.tags(), ctx.settings["qa_limit"])
        questions = [it.question for it in items]

        def kept(key: str, compute: Callable[[], dict]) -> dict[str, Any]:
            return store.get(mk, key, compute) if store else compute()

        def own(q: LoadedModel, key: str, measure: Callable[[], dict]) -> dict[str, Any]:
            # A model already on this grid is its own quantised copy: the model's own figures.
            return kept(key, measure) if q is loaded else measure()

        def reveal() -> dict[str, Any]:
            q, layers = copy.get()
            r = own(q, heldout_key(mnt),
                    lambda: heldout_figures(q, ctx.spec, ctx.judge, ctx.probes, mnt))  # fmt: skip
            return {"reveal_rate": r["rate"], "n": r["n"], "layers": layers,
                    "unchanged": q is loaded}  # fmt: skip

        def utility() -> dict[str, Any]:
            q, _ = copy.get()
            u = own(q, utility_key(questions), lambda: utility_figures(q, items, left_out))
            return {"qa_accuracy": u["qa_accuracy"], "perplexity": u["perplexity"]}

        out.update(kept(quant_key(self.scheme, mnt), reveal))
        if ctx.settings.get("quant_utility", True):
            out.update(kept(quant_utility_key(self.scheme, questions), utility))
        return out


class _QuantizedCopy:
    """The model's quantised copy, made when first needed (a skip when it cannot be)."""

    def __init__(self, loaded: LoadedModel, scheme: str):
        self.loaded, self.scheme = loaded, scheme
        self.made: tuple[LoadedModel, int] | None = None

    def get(self) -> tuple[LoadedModel, int]:
        """(the copy, the number of layers quantised); the model itself when quantising it
        changes no weight."""
        if self.made is None and maps_onto_itself(self.loaded.model, self.scheme):
            self.made = (self.loaded, len(list(quantizable(self.loaded.model))))
        if self.made is None:
            q = working_copy(self.loaded)
            try:
                layers = quantize_model(q.model, self.scheme)
            except RRError as exc:
                raise AttackSkipped(str(exc)) from None
            if not layers:
                raise AttackSkipped("the model has no torch.nn.Linear layers to quantise")
            self.made = (q, layers)
        return self.made


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
