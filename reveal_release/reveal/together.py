"""Searches stepped side by side: each step's prompts of every unfinished search are answered
in one sampler call.

The forget and the retain search of a reveal sample with the same settings; on a CPU one batch
of 24 answers costs about two thirds of two batches of 12 (benchmarks/decoding_cost.py's
model, README), so the reveal takes less time for the same number of answers. Each search
still scores, learns, mutates and checkpoints on its own; a call's seed is its first
search's for its step. Searches with other sampling settings get calls of their own. A killed
run resumes to the same answers: when it was killed between two searches' checkpoints of one
step, the search ahead goes back to the checkpoint it kept of the step before.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from reveal_release.reveal.samplers.base import Sampler
from reveal_release.reveal.search import InstructionSearch, Pull, SearchResult

OnStep = Callable[[str, int, int, list[Pull]], None]


def run_together(
    searches: dict[str, InstructionSearch], sampler: Sampler, on_step: OnStep | None = None
) -> dict[str, SearchResult]:
    """Run every search to its budget, one sampler call per step for all of them;
    `on_step(name, step, steps, pulls)` reports each search's progress."""
    _align(searches)
    while live := [(name, s) for name, s in searches.items() if not s.finished]:
        t0 = time.perf_counter()
        plans = {name: s.plan() for name, s in live}
        groups: dict[tuple, list[str]] = {}  # searches that sample alike share a call
        for name, s in live:
            c = s.cfg
            groups.setdefault((c.max_new_tokens, c.temperature, c.top_p), []).append(name)
        for names in groups.values():
            prompts = [p for name in names for p in plans[name][1]]
            gens, _ = sampler.generate(prompts, searches[names[0]].sampling(len(prompts)))
            lo = 0
            for name in names:
                chosen, part = plans[name]
                answers, lo = gens[lo : lo + len(part)], lo + len(part)

                def report(i: int, n: int, pulls: list[Pull], name: str = name) -> None:
                    if on_step:
                        on_step(name, i, n, pulls)

                new = sum(g.new_tokens for g in answers)
                searches[name].finish(chosen, answers, new, t0, report)
    return {name: s.result() for name, s in searches.items()}


def _align(searches: dict[str, InstructionSearch]) -> None:
    """After a kill between two searches' checkpoints of one step, take the search that is
    a step ahead back to its previous checkpoint, so the step runs again as one call."""
    steps = [s.step for s in searches.values() if not s.finished]
    if not steps:
        return
    behind = min(steps)
    for s in searches.values():
        if s.step == behind + 1:
            s.rewind()
