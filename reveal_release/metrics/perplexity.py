"""Perplexity on plain English prose: the utility figure most sensitive to a damaged model."""

from __future__ import annotations

import math

from reveal_release.errors import RRError
from reveal_release.metrics.data import PLAIN_TEXT_FILE, data_file
from reveal_release.models import LoadedModel


def plain_text() -> str:
    """The bundled plain English prose (everyday topics, no code) used for perplexity."""
    return data_file(PLAIN_TEXT_FILE).read_text(encoding="utf-8")


def perplexity(
    loaded: LoadedModel, text: str | None = None, window: int = 256, stride: int = 256
) -> float:
    """exp(mean next-token NLL) of the text, scored in windows of `window` tokens."""
    import torch

    if window < 2 or stride < 1 or stride > window:
        raise RRError(
            f"bad perplexity window {window} / stride {stride}: use 1 <= stride <= window"
        )
    text = plain_text() if text is None else text
    ids = loaded.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
    if ids.numel() < 2:
        raise RRError("text for perplexity has fewer than 2 tokens: pass a longer text")
    model, device = loaded.model, loaded.device
    total_nll, counted, scored_to = 0.0, 0, 1  # token 0 is never predicted
    with torch.inference_mode():
        for start in range(0, ids.numel() - 1, stride):
            chunk = ids[start : start + window]
            if chunk.numel() < 2:
                break
            logits = model(chunk.unsqueeze(0).to(device)).logits[0, :-1].float()
            targets = chunk[1:].to(device)
            # With overlapping windows, count only tokens no earlier window predicted.
            new = max(0, start + chunk.numel() - max(scored_to, start + 1))
            if new:
                nll = torch.nn.functional.cross_entropy(
                    logits[-new:], targets[-new:], reduction="sum"
                )
                total_nll += float(nll)
                counted += new
            scored_to = start + chunk.numel()
            if scored_to >= ids.numel():
                break
    return math.exp(total_nll / counted)
