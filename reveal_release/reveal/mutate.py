"""Grow the instruction pool: the model rewrites and extends the best instructions (APE-style)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from reveal_release.reveal.dedupe import normalise
from reveal_release.reveal.samplers.base import Sampler, SamplingConfig

_PREFIX = re.compile(
    r"^(here('s| is)[^:]*:|rewritten( instruction)?:|new instruction:|instruction:|sure[,!.]?)\s*",
    re.IGNORECASE,
)


def clean_instruction(text: str, min_words: int = 4, max_words: int = 40) -> str | None:
    """The first usable line of a model's rewrite, or None if it does not look like one."""
    for line in text.strip().splitlines():
        line = _PREFIX.sub("", line.strip().strip("*-#>").strip()).strip().strip("\"“”'")
        if not line:
            continue
        words = line.split()
        if min_words <= len(words) <= max_words and "{" not in line:
            return line
        return None
    return None


def propose(
    sampler: Sampler,
    meta_pool: Sequence[str],
    parents: Sequence[str],
    existing: Sequence[str],
    n: int,
    seed: int,
) -> list[str]:
    """Ask the model for n new instructions made from the parents with meta-instructions."""
    if n <= 0 or not parents or not meta_pool:
        return []
    prompts = [
        meta_pool[(seed + i) % len(meta_pool)].replace("{instruction}", parents[i % len(parents)])
        for i in range(2 * n)  # ask twice as many: some rewrites are unusable
    ]
    cfg = SamplingConfig(max_new_tokens=48, temperature=0.9, top_p=0.95, seed=seed, batch_size=16)
    gens, _ = sampler.generate(prompts, cfg)
    seen = {normalise(e) for e in existing}
    out: list[str] = []
    for g in gens:
        cand = clean_instruction(g.text)
        if cand and normalise(cand) not in seen:
            seen.add(normalise(cand))
            out.append(cand)
        if len(out) == n:
            break
    return out
