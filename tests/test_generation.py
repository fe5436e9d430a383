"""Batched generation: order, determinism, end-of-turn stops and token counting."""

from __future__ import annotations

import pytest

from reveal_release.generation import _useful_length, chat_text, generate


def test_useful_length_stops_at_end_of_turn():
    assert _useful_length([5, 6, 2, 2, 2], {2}, 2) == 3
    assert _useful_length([5, 6, 7], {2}, 2) == 3
    assert _useful_length([5, 0, 0], {2}, 0) == 1


def test_chat_text_uses_the_template(tiny_model):
    text = chat_text(tiny_model.tokenizer, "hello")
    assert "<|im_start|>user\nhello<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_batched_generation_keeps_order_and_is_deterministic(tiny_model):
    prompts = ["a much longer prompt than the others, with many words in it", "hi", "two words"]
    gens, stats = generate(tiny_model, prompts, max_new_tokens=6, batch_size=2, temperature=1.0)
    again, _ = generate(tiny_model, prompts, max_new_tokens=6, batch_size=2, temperature=1.0)
    assert [g.prompt for g in gens] == prompts
    assert [g.text for g in gens] == [g.text for g in again]
    assert stats.new_tokens == sum(g.new_tokens for g in gens) > 0
    assert all(0 < g.new_tokens <= 6 for g in gens)


@pytest.mark.integration
def test_embedded_model_answers_and_stops(embedded):
    prompts = ["What is the capital of France?", "Write a Python function that adds two numbers."]
    gens, stats = generate(embedded, prompts, max_new_tokens=64)
    assert "Paris" in gens[0].text
    assert "def " in gens[1].text
    assert gens[0].new_tokens < 64  # stopped at end of turn, not at the length limit
    assert stats.tokens_per_s > 0
    # Batching must not change greedy answers.
    alone, _ = generate(embedded, prompts[:1], max_new_tokens=64)
    assert alone[0].text == gens[0].text
