"""Paraphrased views of prompts: the model rewords each request itself (R2F's views)."""

from __future__ import annotations

from collections.abc import Sequence

from reveal_release.models import LoadedModel

PARAPHRASE = "Rewrite this request in other words, keeping its meaning. Request: {p}"


def paraphrases(loaded: LoadedModel, prompts: Sequence[str], n: int, seed: int) -> list[list[str]]:
    """n - 1 model-written rewordings of each prompt (sampled), the prompt itself first."""
    from reveal_release.generation import generate

    views = [[p] for p in prompts]
    for v in range(1, n):
        gens, _ = generate(
            loaded,
            [PARAPHRASE.format(p=p) for p in prompts],
            max_new_tokens=48,
            temperature=0.8,
            seed=seed + v,
        )
        for row, g, p in zip(views, gens, prompts, strict=True):
            line = next((ln.strip(' "') for ln in g.text.splitlines() if ln.strip()), "")
            row.append(line if len(line) > 8 else p)  # an empty rewording: the prompt again
    return views
