"""Measure a model after a round: held-out reveal rate, retain QA accuracy, perplexity."""

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
    from reveal_release.metrics.qa import load_qa, qa_accuracy

    start = time.perf_counter()
    prompts = spec.probes(probe_limit)
    probes = reveal_rate(loaded, spec, judge=judge, prompts=prompts, max_new_tokens=max_new_tokens)
    items = load_qa()
    qa = qa_accuracy(loaded, items[:qa_limit] if qa_limit else items)
    ppl = perplexity(loaded)
    return {
        "heldout_reveal_rate": probes.rate,
        "heldout_mean_score": probes.mean_score,
        "heldout_n": probes.n,
        "retain_accuracy": qa.accuracy,
        "retain_n": qa.total,
        "perplexity": ppl,
        "examples": probes.rows,
        "seconds": time.perf_counter() - start,
    }


def ratios(metrics: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    """Retain accuracy and perplexity as ratios to the base model's."""
    acc = base["retain_accuracy"]
    return {
        "retain_ratio": metrics["retain_accuracy"] / acc if acc else 1.0,
        "ppl_ratio": metrics["perplexity"] / base["perplexity"],
    }
