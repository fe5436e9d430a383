"""Membership inference by min-k% probability (Shi et al. 2024) and a rank-based AUC."""

from __future__ import annotations

import math
from collections.abc import Sequence


def min_k_score(token_logps: Sequence[float], k: float = 0.2) -> float:
    """Mean of the lowest k share of token log-probs: high means the text looks familiar."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    if not token_logps:
        return float("nan")
    worst = sorted(token_logps)[: max(1, math.ceil(k * len(token_logps)))]
    return sum(worst) / len(worst)


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U)."""
    pos = [p for p in positives if not math.isnan(p)]
    neg = [n for n in negatives if not math.isnan(n)]
    if not pos or not neg:
        raise ValueError("auc needs at least one positive and one negative score")
    ranked = sorted([(v, 1) for v in pos] + [(v, 0) for v in neg])
    rank_sum, i = 0.0, 0
    while i < len(ranked):  # average ranks over ties
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mid = (i + 1 + j) / 2
        rank_sum += mid * sum(1 for _, lab in ranked[i:j] if lab == 1)
        i = j
    u = rank_sum - len(pos) * (len(pos) + 1) / 2
    return u / (len(pos) * len(neg))
