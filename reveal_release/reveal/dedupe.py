"""Near-duplicate removal for self-generated sets (exact text, then embedding cosine)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np


def normalise(text: str) -> str:
    """Lower case, collapsed whitespace: the key for exact duplicates."""
    return re.sub(r"\s+", " ", text.strip().lower())


def keep_distinct(
    texts: Sequence[str], scores: Sequence[float], embeddings: np.ndarray, max_cosine: float = 0.95
) -> list[int]:
    """Indices to keep, best score first: drop exact repeats and any text whose cosine to a
    kept one exceeds max_cosine."""
    order = sorted(range(len(texts)), key=lambda i: -scores[i])
    seen: set[str] = set()
    kept: list[int] = []
    emb = np.asarray(embeddings, dtype=np.float32)
    emb = emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
    for i in order:
        key = normalise(texts[i])
        if not key or key in seen:
            continue
        if kept and float((emb[kept] @ emb[i]).max()) > max_cosine:
            continue
        seen.add(key)
        kept.append(i)
    return kept
