"""Fluency of generations: how often they repeat themselves, and how odd the original finds them."""

from __future__ import annotations

from collections.abc import Sequence


def repetition_rate(texts: Sequence[str], n: int = 3) -> float | None:
    """Share of word n-grams that repeat an earlier n-gram of the same text; None if no n-gram."""
    repeated = total = 0
    for text in texts:
        words = text.lower().split()
        seen: set[tuple[str, ...]] = set()
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            repeated += gram in seen
            seen.add(gram)
            total += 1
    return repeated / total if total else None
