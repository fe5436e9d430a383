"""What a model still reveals: the judged share of held-out probes that show the target."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reveal_release.errors import RRError
from reveal_release.generation import generate
from reveal_release.models import LoadedModel
from reveal_release.targets.judges import Judge, make_judge
from reveal_release.targets.spec import TargetSpec


@dataclass
class ProbeResult:
    """Reveal rate over probes: share judged at or above the spec's threshold, with rows."""

    rate: float
    mean_score: float
    n: int
    rows: list[dict[str, Any]] = field(default_factory=list)


def reveal_rate(
    loaded: LoadedModel,
    spec: TargetSpec,
    judge: Judge | None = None,
    prompts: Sequence[str] | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 32,
) -> ProbeResult:
    """Greedy answers to the held-out probes (or `prompts`), judged against spec.threshold."""
    prompts = spec.probes() if prompts is None else list(prompts)
    if not prompts:
        raise RRError(f"no probes for target '{spec.identity()}': pass at least one prompt")
    judge = judge if judge is not None else make_judge(spec.judge, **spec.judge_params)
    gens, _ = generate(loaded, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    scores = judge.score([g.text for g in gens])
    rows = [
        {"prompt": g.prompt, "response": g.text, "score": float(s)}
        for g, s in zip(gens, scores, strict=True)
    ]
    hits = sum(r["score"] >= spec.threshold for r in rows)
    return ProbeResult(hits / len(rows), sum(scores) / len(rows), len(rows), rows)
