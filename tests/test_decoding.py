"""The faster decoding path gives transformers' own tokens: grouped attention, exact top-p."""

from __future__ import annotations

import pytest
from helpers import tiny_llama

from reveal_release.decoding import GROUPED_SDPA, grouped_attention, nucleus_processor
from reveal_release.generation import _sampling, chat_text

PROMPTS = [
    "Hi",
    "Write a function that sorts a list of numbers",
    "Tell me about the weather in a long and winding sentence, please",
]


def _tokens(loaded, fast: bool, temperature: float, top_p: float, n: int = 24):
    import torch

    tok, model = loaded.tokenizer, loaded.model
    enc = tok(
        [chat_text(tok, p) for p in PROMPTS],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    )
    if fast:
        options = _sampling(model, temperature, top_p)
    else:  # transformers' own warpers, transformers' own attention
        sampling = temperature > 0
        options = {
            "do_sample": sampling,
            "temperature": temperature if sampling else None,
            "top_p": top_p if sampling else None,
            "top_k": None,
        }
    extra = {"max_new_tokens": n, "min_new_tokens": n, "return_dict_in_generate": True}
    extra["output_logits"] = True
    torch.manual_seed(7)
    with torch.inference_mode():
        if fast:
            with grouped_attention(model):
                assert model.config._attn_implementation == GROUPED_SDPA
                out = model.generate(**enc, **options, **extra)
                prefill = model(**enc).logits
        else:
            out = model.generate(**enc, **options, **extra)
            prefill = model(**enc).logits
    assert model.config._attn_implementation == "sdpa"
    # the model's logits at every step (before sampling), and over the padded prompts
    logits = torch.stack(out.logits) if out.logits else torch.zeros(0)
    return out.sequences, logits, prefill[enc.attention_mask.bool()]


@pytest.mark.parametrize("temperature,top_p", [(0.0, 1.0), (0.8, 0.95), (1.3, 0.5)])
def test_the_fast_path_gives_the_same_tokens_on_a_tiny_model(tiny_model, temperature, top_p):
    """Padded prompts of three lengths, greedy and sampled: token for token the same, and the
    same logits bit for bit at every step and over the prompts."""
    import torch

    assert tiny_model.model.config.num_key_value_heads < tiny_model.model.config.num_attention_heads
    slow = _tokens(tiny_model, False, temperature, top_p)
    fast = _tokens(tiny_model, True, temperature, top_p)
    for a, b in zip(slow, fast, strict=True):
        assert torch.equal(a, b)


def test_the_fast_path_gives_the_same_tokens_on_the_embedded_model(embedded):
    """The reveal's sampling settings on the real model (peaked distributions, 3 KV groups)."""
    import torch

    for settings in [(0.8, 0.95), (0.0, 1.0)]:
        slow, fast = _tokens(embedded, False, *settings), _tokens(embedded, True, *settings)
        for a, b in zip(slow, fast, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("sharpness", [0.1, 1.0, 5.0, 30.0])
def test_the_nucleus_scores_equal_transformers_warpers(sharpness):
    """From flat to peaked logits (the search widens past 64 tokens when it must): the same
    scores as TemperatureLogitsWarper then TopPLogitsWarper, -inf where they filter."""
    import torch
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 5000, generator=gen) * sharpness
    for temperature, top_p in [(0.8, 0.95), (1.0, 0.5), (0.7, 0.99)]:
        want = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, scores))
        got = nucleus_processor(temperature, top_p)(None, scores)
        assert torch.equal(got, want)
        assert torch.isfinite(got).sum() >= 6


def test_a_model_without_grouped_heads_is_left_as_it_is(tokenizer):
    """Grouped attention only where key/value heads are shared; a config's top-k keeps
    transformers' own sampling order."""
    model = tiny_llama(tokenizer)
    model.config.num_key_value_heads = model.config.num_attention_heads
    with grouped_attention(model):
        assert model.config._attn_implementation == "sdpa"
    model.generation_config.top_k = 40
    assert "logits_processor" not in _sampling(model, 0.8, 0.95)
