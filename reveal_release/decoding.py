"""Faster decoding on the CPU, token for token the same as transformers' own.

Two costs of `model.generate` that are not the model's arithmetic: with a padding mask,
transformers' SDPA attention copies every layer's key/value cache once per head group and per
token (`repeat_kv`), because CUDA's fused kernels take grouped heads only without a mask; and
top-p sampling sorts the whole vocabulary at every token. On the CPU, SDPA takes grouped heads
with a mask (`enable_gqa`), and the nucleus lies among the few most likely tokens. Both give
the same scores, so the same tokens for the same seed (tests/test_decoding.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

GROUPED_SDPA = "rr_grouped_sdpa"
_registered = False


def _grouped_sdpa(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' SDPA attention, with grouped heads passed to the kernel, not copied."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = kwargs.get("position_bias") is None and kwargs.get("cache") is None
    grouped = getattr(module, "num_key_value_groups", 1) > 1
    if not (plain and grouped and query.device.type == "cpu" and attention_mask is not None):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
        )
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(GROUPED_SDPA, _grouped_sdpa)
        AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)
        _registered = True


@contextmanager
def grouped_attention(model: Any) -> Iterator[None]:
    """Within the block, a CPU model on SDPA attention with grouped key/value heads runs the
    grouped kernel (the same outputs); any other model is left as it is."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    heads = getattr(config, "num_attention_heads", 0)
    groups = heads // (getattr(config, "num_key_value_heads", None) or heads or 1)
    on_cpu = next(base.parameters()).device.type == "cpu"
    if getattr(config, "_attn_implementation", None) != "sdpa" or groups <= 1 or not on_cpu:
        yield
        return
    _register()
    base.set_attn_implementation(GROUPED_SDPA)
    try:
        yield
    finally:
        base.set_attn_implementation("sdpa")


def nucleus_processor(temperature: float, top_p: float) -> Any:
    """A processor list that applies temperature, then top-p, as transformers' warpers do
    (same kept tokens, same scores), looking only at the most likely tokens."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    class Nucleus(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            scores = scores / temperature
            probs = scores.softmax(-1)
            vocab = scores.shape[-1]
            k = min(64, vocab)
            while True:
                top, idx = probs.topk(k, dim=-1)
                if k == vocab or bool((top.sum(-1) >= top_p).all()):
                    break
                k = min(4 * k, vocab)
            # transformers keeps a token while the mass strictly above it is under top_p
            # (it removes the ascending cumulative mass <= 1 - top_p), and always the first
            keep = (top.cumsum(-1) - top) < top_p
            keep[:, 0] = True
            out = torch.full_like(scores, float("-inf"))
            kept = torch.where(keep, scores.gather(-1, idx), out[:, :k])
            return out.scatter(-1, idx, kept)

    return LogitsProcessorList([Nucleus()])
