"""Reveal reward: judge relevance and Vendi diversity, combined by a weighted harmonic mean."""

from __future__ import annotations

import numpy as np


def vendi_score(embeddings: np.ndarray) -> float:
    """Vendi score exp(-sum l log l), l the eigenvalues of K/n, K the cosine-similarity matrix."""
    x = np.asarray(embeddings, dtype=np.float64)
    n = len(x)
    if n == 0:
        return 0.0
    x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    eig = np.linalg.eigvalsh(x @ x.T / n)
    eig = eig[eig > 1e-12]
    return float(np.exp(-(eig * np.log(eig)).sum()))


def diversity(embeddings: np.ndarray) -> float:
    """Vendi score divided by the number of samples, in (0, 1]: 1 when all are orthogonal."""
    n = len(embeddings)
    return vendi_score(embeddings) / n if n else 0.0


def reward(relevance: float, diversity_: float, diversity_weight: float = 0.5) -> float:
    """1 / (w / v + (1 - w) / r) with w the diversity weight; 0 when either part is 0."""
    if relevance <= 0 or diversity_ <= 0:
        return 0.0
    return 1.0 / (diversity_weight / diversity_ + (1.0 - diversity_weight) / relevance)
