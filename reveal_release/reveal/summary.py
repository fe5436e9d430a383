"""The tables `rr reveal` ends with: what the searches produced, and the best instructions."""

from __future__ import annotations

from reveal_release.console import table
from reveal_release.reveal.stage import RevealSummary

COLUMNS = [
    "steps", "samples", "yield", "forget", "forget rel.", "instructions", "retain", "tok/s", "s",
]  # fmt: skip


def print_summary(summary: RevealSummary, title: str) -> None:
    """The reveal's figures and its five best reveal instructions."""
    s = summary
    table(
        title,
        COLUMNS,
        [
            (
                s.steps, s.samples, s.yield_rate, s.forget, s.forget_relevance,
                s.instructions_used, s.retain, s.tokens_per_s, s.seconds,
            )
        ],
    )  # fmt: skip
    table(
        "best reveal instructions",
        ["reward", "pulls", "instruction"],
        [(b["reward"], b["pulls"], b["instruction"]) for b in s.best],
    )
