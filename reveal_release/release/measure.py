"""Measure a model after a round: held-out reveal rate, retain QA accuracy, perplexity, and the
same held-out probes on its quantised copy (durability), with the share of codes it changed."""

from __future__ import annotations

import time
from typing import Any

from reveal_release.models import LoadedModel
from reveal_release.targets.spec import TargetSpec


def measure(
    loaded: LoadedModel,
    spec: TargetSpec,
    judge: Any,
    max_new_tokens: int = 64,
    probe_limit: int = 0,
    qa_limit: int = 0,
) -> dict[str, Any]:
    """The figures each round is judged by, with a few example answers."""
    from reveal_release.metrics.perplexity import perplexity
    from reveal_release.metrics.probes import reveal_rate
    from reveal_release.metrics.qa import qa_accuracy, retain_items

    start = time.perf_counter()
    prompts = spec.probes(probe_limit)
    probes = reveal_rate(loaded, spec, judge=judge, prompts=prompts, max_new_tokens=max_new_tokens)
    items, left_out = retain_items(spec.tags(), qa_limit)
    qa = qa_accuracy(loaded, items)
    ppl = perplexity(loaded)
    return {
        "heldout_reveal_rate": probes.rate,
        "heldout_mean_score": probes.mean_score,
        "heldout_n": probes.n,
        "retain_accuracy": qa.accuracy,
        "retain_n": qa.total,
        "retain_left_out": [it.question for it in left_out],
        "perplexity": ppl,
        "examples": probes.rows,
        "seconds": time.perf_counter() - start,
    }


def measure_quantized(
    loaded: LoadedModel,
    spec: TargetSpec,
    judge: Any,
    scheme: str,
    base_codes: dict[str, Any] | None,
    max_new_tokens: int = 64,
    probe_limit: int = 0,
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
    copy_ = copy.deepcopy(loaded.model)
    quantize_model(copy_, scheme)
    q = LoadedModel.bare(copy_, loaded.tokenizer)
    probes = reveal_rate(q, spec, judge, spec.probes(probe_limit), max_new_tokens=max_new_tokens)
    out.update(quant_reveal_rate=probes.rate, quant_seconds=time.perf_counter() - start)
    return out


def ratios(metrics: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    """Retain accuracy and perplexity as ratios to the base model's."""
    acc = base["retain_accuracy"]
    return {
        "retain_ratio": metrics["retain_accuracy"] / acc if acc else 1.0,
        "ppl_ratio": metrics["perplexity"] / base["perplexity"],
    }
