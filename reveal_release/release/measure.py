"""Measure a model after a round: held-out reveal rate, retain QA accuracy, perplexity, and the
same held-out probes on its quantised copy (durability), with the share of codes it changed."""

from __future__ import annotations

import time
from typing import Any

from reveal_release.metrics.model_figures import (
    FigureStore,
    heldout_figures,
    heldout_key,
    model_key,
    quant_key,
    utility_figures,
    utility_key,
)
from reveal_release.models import LoadedModel
from reveal_release.targets.spec import TargetSpec


def measure(
    loaded: LoadedModel,
    spec: TargetSpec,
    judge: Any,
    max_new_tokens: int = 64,
    probe_limit: int = 0,
    qa_limit: int = 0,
    store: FigureStore | None = None,
) -> dict[str, Any]:
    """The figures each round is judged by, with a few example answers (read from `store`
    when given: only for a model whose fingerprint is its weights', i.e. the base)."""
    from reveal_release.metrics.qa import retain_items

    start = time.perf_counter()
    prompts = spec.probes(probe_limit)
    items, left_out = retain_items(spec.tags(), qa_limit)
    mk = model_key(loaded)

    def heldout() -> dict[str, Any]:
        return heldout_figures(loaded, spec, judge, prompts, max_new_tokens)

    def utility() -> dict[str, Any]:
        return utility_figures(loaded, items, left_out)

    questions = [it.question for it in items]
    keys = heldout_key(max_new_tokens), utility_key(questions)
    probes = store.get(mk, keys[0], heldout) if store else heldout()
    util = store.get(mk, keys[1], utility) if store else utility()
    return {
        "heldout_reveal_rate": probes["rate"],
        "heldout_mean_score": probes["mean_score"],
        "heldout_n": probes["n"],
        "retain_accuracy": util["qa_accuracy"],
        "retain_n": util["qa_n"],
        "retain_left_out": util["qa_left_out"],
        "perplexity": util["perplexity"],
        "examples": probes["rows"],
        "seconds": time.perf_counter() - start,
        "figures": {keys[0]: probes, keys[1]: util},
    }


def measure_quantized(
    loaded: LoadedModel,
    spec: TargetSpec,
    judge: Any,
    scheme: str,
    base_codes: dict[str, Any] | None,
    max_new_tokens: int = 64,
    probe_limit: int = 0,
    store: FigureStore | None = None,
) -> dict[str, Any]:
    """The held-out reveal rate of the model's quantised copy, and the share of its codes that
    differ from the base model's (the part of the update the quantised model keeps)."""
    import copy

    from reveal_release.metrics.probes import reveal_rate
    from reveal_release.quantizers import changed_share, codes_of, quantize_model

    start = time.perf_counter()
    out: dict[str, Any] = {"quant_scheme": scheme}
    if base_codes is not None:
        out["quant_codes_changed"] = changed_share(base_codes, codes_of(loaded.model, scheme))

    def reveal() -> dict[str, Any]:
        copy_ = copy.deepcopy(loaded.model)
        layers = quantize_model(copy_, scheme)
        q = LoadedModel.bare(copy_, loaded.tokenizer)
        r = reveal_rate(q, spec, judge, spec.probes(probe_limit), max_new_tokens=max_new_tokens)
        return {"reveal_rate": r.rate, "n": r.n, "layers": layers}

    key = quant_key(scheme, max_new_tokens)
    figures = store.get(model_key(loaded), key, reveal) if store else reveal()
    out.update(quant_reveal_rate=figures["reveal_rate"], quant_seconds=time.perf_counter() - start)
    out["figures"] = {key: figures}
    return out


def ratios(metrics: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    """Retain accuracy and perplexity as ratios to the base model's."""
    acc = base["retain_accuracy"]
    return {
        "retain_ratio": metrics["retain_accuracy"] / acc if acc else 1.0,
        "ppl_ratio": metrics["perplexity"] / base["perplexity"],
    }
