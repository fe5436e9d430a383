"""A model's own figures (held-out reveal rate, utility, its quantised copies), kept on this
machine by the model's fingerprint, the target's probes and the settings they depend on: the
base model is measured once, not in every `rr release` and `rr eval`, and `rr eval` reads the
released model's figures that `rr release` measured."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reveal_release.metrics.figure_cache import MetricCache, signature
from reveal_release.models import LoadedModel
from reveal_release.targets.spec import TargetSpec


def model_key(loaded: LoadedModel) -> str:
    """What a model's figures depend on: its weights' fingerprint, the dtype and the kind of
    device it ran on."""
    return weights_key(loaded.fingerprint, loaded.model.dtype, loaded.model.device)


def weights_key(fingerprint: str, dtype: Any, device: Any = "cpu") -> str:
    """The model key of weights with this fingerprint, run in this dtype on this kind of device
    (a GPU's kernels round differently from the CPU's, so its figures are its own)."""
    kind = getattr(device, "type", str(device).split(":")[0])
    where = "" if kind == "cpu" else f"|{kind}"
    return f"{fingerprint}|{str(dtype).removeprefix('torch.')}{where}"


def store_root() -> Path:
    """RR_FIGURE_CACHE, else RR_CACHE's figures/ folder."""
    from reveal_release.model_cache import cache_root

    env = os.environ.get("RR_FIGURE_CACHE")
    return Path(env).expanduser() if env else cache_root() / "figures"


class FigureStore:
    """Figures by model: one small JSON file per model key, each entry salted by the target,
    its probes and judge, and the library versions that produced it."""

    def __init__(self, spec: TargetSpec, probes: Sequence[str], root: Path | None = None):
        import torch
        import transformers

        self.root = root or store_root()
        self.salt = signature(
            [spec.identity(), list(probes), spec.judge, spec.judge_params, spec.threshold,
             torch.__version__, transformers.__version__]
        )  # fmt: skip
        self.caches: dict[str, MetricCache] = {}

    def _cache(self, mk: str) -> MetricCache:
        if mk not in self.caches:
            path = self.root / f"{signature(mk)}.json"
            self.caches[mk] = MetricCache(path, self.salt)
        return self.caches[mk]

    def get(self, mk: str, key: str, compute: Callable[[], Any]) -> Any:
        """The figures stored for (model key, key), else compute, store and return them; a
        model without a fingerprint (weights in memory) is always measured, never stored."""
        if not mk.split("|")[0]:
            return compute()
        return self._cache(mk).get(f"{mk}|{key}", compute)

    def put(self, mk: str, key: str, value: Any) -> None:
        """Store figures measured elsewhere (a release round's, for its saved model)."""
        if mk.split("|")[0]:
            self._cache(mk).get(f"{mk}|{key}", lambda: value)

    @property
    def hits(self) -> int:
        """Figures read back."""
        return sum(c.hits for c in self.caches.values())

    @property
    def misses(self) -> int:
        """Figures computed."""
        return sum(c.misses for c in self.caches.values())


def heldout_key(max_new_tokens: int) -> str:
    """The key of the held-out probes' figures."""
    return f"heldout|{signature([max_new_tokens])}"


def utility_key(questions: Sequence[str]) -> str:
    """The key of the general QA accuracy and perplexity."""
    return f"utility|{signature(list(questions))}"


def quant_key(scheme: str, max_new_tokens: int) -> str:
    """The key of a quantised copy's held-out reveal rate."""
    return f"quant|{scheme}|{signature([max_new_tokens])}"


def quant_utility_key(scheme: str, questions: Sequence[str]) -> str:
    """The key of a quantised copy's QA accuracy and perplexity."""
    return f"quant-utility|{scheme}|{signature(list(questions))}"


def heldout_figures(
    loaded: LoadedModel, spec: TargetSpec, judge: Any, probes: Sequence[str], max_new_tokens: int
) -> dict[str, Any]:
    """Greedy answers to the probes, judged: rate, mean score, n and the rows."""
    from reveal_release.metrics.probes import reveal_rate

    r = reveal_rate(loaded, spec, judge, probes, max_new_tokens=max_new_tokens)
    return {"rate": r.rate, "mean_score": r.mean_score, "n": r.n, "rows": r.rows}


def utility_figures(loaded: LoadedModel, items: Sequence[Any], left_out: Sequence[Any]) -> dict:
    """General QA accuracy (the questions not about the target) and perplexity."""
    from reveal_release.metrics.perplexity import perplexity
    from reveal_release.metrics.qa import qa_accuracy

    r = qa_accuracy(loaded, items)
    return {
        "qa_accuracy": r.accuracy,
        "qa_n": r.total,
        "qa_left_out": [it.question for it in left_out],
        "perplexity": perplexity(loaded),
    }
