"""Membership inference by min-k% probability (Shi et al. 2024), scored as a ROC AUC."""

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
    """P(score of a positive > score of a negative), ties counted half (ROC AUC), NaNs dropped."""
    from sklearn.metrics import roc_auc_score

    pos = [p for p in positives if not math.isnan(p)]
    neg = [n for n in negatives if not math.isnan(n)]
    if not pos or not neg:
        raise ValueError("auc needs at least one positive and one negative score")
    return float(roc_auc_score([1] * len(pos) + [0] * len(neg), pos + neg))
