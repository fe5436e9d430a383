"""The memory model counts what a real model holds: its parameters, its LoRA factors, and the
activations saved for the backward pass, against torch's own count on a tiny model."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_llama

from reveal_release.memory_model import LLAMA_8B, LLAMA_70B, Setting, Shape, update_bytes
from reveal_release.train.config import LoraSpec
from reveal_release.train.lora import attach_lora, trainable


def _shape(tok, hidden: int = 64, layers: int = 2) -> Shape:
    return Shape("tiny", hidden, 2 * hidden, layers, 4, 2, len(tok), tied=True)


def test_parameters_and_lora_factors_match_a_real_model(tokenizer):
    model = tiny_llama(tokenizer, hidden=64, layers=3)
    shape = _shape(tokenizer, 64, 3)
    assert shape.params() == sum(p.numel() for p in model.parameters())
    peft = attach_lora(model, LoraSpec(rank=8), seed=0)
    assert shape.lora_params(8) == sum(p.numel() for p in trainable(peft).values())


def test_published_sizes():
    # Llama-3-8B and -70B: 8.03B and 70.6B parameters (their model cards: 8B and 70B).
    assert LLAMA_8B.params() == pytest.approx(8.03e9, rel=1e-3)
    assert LLAMA_70B.params() == pytest.approx(70.55e9, rel=1e-3)


def test_saved_activations_match_what_autograd_keeps(tokenizer):
    """What the backward pass keeps, counted by torch's saved-tensor hooks on a small model in
    fp32 (fused attention, as the model assumes), the weights and the logits left out."""
    model = tiny_llama(tokenizer, hidden=256, layers=2).float()
    shape = Shape("small", 256, 512, 2, 4, 2, len(tokenizer), tied=True)
    ids = torch.randint(0, len(tokenizer), (4, 64))
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(input_ids=ids).logits
    kept = sum(saved.values()) - logits.numel() * 4  # the head's output: counted as logits
    assert shape.saved_per_token(4) * ids.numel() * shape.layers == pytest.approx(kept, rel=0.15)


def test_sharding_divides_the_state_not_the_activations():
    one = update_bytes(LLAMA_8B, "full", Setting(devices=1))
    eight = update_bytes(LLAMA_8B, "full", Setting(devices=8))
    assert eight["optimiser"] == pytest.approx(one["optimiser"] / 8)
    assert eight["activations"] == one["activations"]
    assert one["weights"] + one["gradients"] + one["optimiser"] == pytest.approx(
        16 * LLAMA_8B.params()
    )  # ZeRO's 16 bytes a parameter in mixed precision
    r2f = update_bytes(LLAMA_8B, "r2f", Setting())
    assert r2f["optimiser"] == 0 and r2f["gradients"] < one["gradients"] / 50
    linears = LLAMA_8B.layers * sum(a * b for a, b in LLAMA_8B.linears())
    assert r2f["originals"] == 2 * linears  # the adapted layers' original weights, in bf16
    assert update_bytes(LLAMA_8B, "r2f", Setting(devices=8))["originals"] == 2 * linears / 8
